"""HumanEval evaluation: problems, generation, sandboxed execution, pass@k, LLM grading."""
