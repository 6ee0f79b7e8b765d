"""Decontamination (paper section 5): training data against HumanEval / MBPP.

One module per job: `ngram` (shared n-grams), `ast_match` (AST match rate),
`embedding` (L2 between unit embeddings), `snippets` (records as code
snippets), `scan` (the three signals over batches, per-problem tally),
`steps` (datatrove steps), `pruning` (datasets minus flagged records),
`table3` (pass@1 with / without a similar record), `evidence` (pairs side by
side), `command` + `cli` (`phi1 contamination`), `stage` + `spec` + `config`
(the `decontam` stage). See docs/decontam.md.
"""
