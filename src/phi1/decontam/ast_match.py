"""AST match rate: how much two snippets share their syntax, names aside.

Definition (the one the README and docs/decontam.md state):

1. Parse each snippet with `ast.parse`. A snippet that does not parse has no
   AST match rate.
2. Drop docstrings (the first statement of a module, class or function body
   when it is a string constant) and module-level imports (a function copied
   into a file leaves its imports at the top of that file, mixed with others).
3. Linearize: walk the tree in pre-order (`ast.iter_child_nodes` order) and
   write one symbol per node: its class (``FunctionDef``, ``For``,
   ``BinOp``, ``Add`` ...). Load/Store/Del contexts are not nodes here.
   *Identifiers* (variable, function, argument, attribute and import names)
   are abstracted: a ``Name`` is the symbol ``Name`` whatever it is called.
   *Literals* are abstracted to their type: every string constant is one
   symbol, every number another (bool, None, bytes and ``...`` each have
   theirs). With ``keep_names`` / ``keep_literals`` each identifier or value
   adds one more symbol, derived from its text, so renaming or changing a
   constant costs an edit.
4. match rate = 1 - d(a, b) / max(|a|, |b|), where d is the Levenshtein
   (unit-cost insert/delete/substitute) distance between the two symbol
   strings and |a| their lengths in symbols (= AST nodes). 1.0 = same tree
   shape; rapidfuzz's ``Levenshtein.normalized_similarity`` is exactly this.

Speed: each node class is one character below U+0100, so a linearized
snippet is a compact Latin-1 string and rapidfuzz compares it with its
bit-parallel Levenshtein. Since d >= | |a| - |b| |, a pair can only reach a
rate r when min(|a|,|b|) / max(|a|,|b|) >= r: `AstIndex` sorts the problems
by length and compares a record only with the problems inside that length
band, with ``score_cutoff`` so rapidfuzz stops a pair as soon as it cannot
reach the lowest rate of interest.

Tiny snippets (a one-line function has ~10 nodes) reach a high rate against
any other tiny snippet; ``min_nodes`` keeps snippets below that size out of
the comparison (both sides), and every row reports its size.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

# One symbol per node class, fixed for this Python version: sorted class names
# -> characters from U+0030. Every process (datatrove task) builds the same table.
_NODE_CLASSES = sorted(
    (c for c in vars(ast).values() if isinstance(c, type) and issubclass(c, ast.AST) and c is not ast.AST),
    key=lambda c: c.__name__,
)
_CONTEXT = (ast.expr_context,)
_SYMBOL = {c: chr(0x30 + i) for i, c in enumerate(_NODE_CLASSES)}
assert max(map(ord, _SYMBOL.values())) < 0x100 - 8, "AST node classes no longer fit below U+0100"
_LITERAL = {  # abstracted constants: one symbol per kind of value
    str: chr(0xF8), bytes: chr(0xF9), bool: chr(0xFA), type(None): chr(0xFB), type(...): chr(0xFC),
    int: chr(0xFD), float: chr(0xFD), complex: chr(0xFD),
}
_OTHER_LITERAL = chr(0xFE)
_NAMED = {  # node class -> the fields holding an identifier (written with keep_names)
    ast.Name: ("id",), ast.arg: ("arg",), ast.Attribute: ("attr",), ast.FunctionDef: ("name",),
    ast.AsyncFunctionDef: ("name",), ast.ClassDef: ("name",), ast.alias: ("name", "asname"),
    ast.keyword: ("arg",), ast.ImportFrom: ("module",), ast.Global: ("names",), ast.Nonlocal: ("names",),
    ast.ExceptHandler: ("name",),
}
_DOC_HOLDERS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_SLACK = 1e-6  # below a cutoff handed to rapidfuzz (its float rounding drops rates equal to it)


@dataclass(frozen=True)
class AstOptions:
    keep_names: bool = False
    keep_literals: bool = False
    min_nodes: int = 16


def _text_symbol(kind: str, text: str) -> str:
    """A symbol for an identifier or a literal's value (keep_names / keep_literals):
    a character above U+FFFF derived from a hash of the text, so equal text is
    equal symbol in every process. Two different texts share a symbol with
    probability ~1e-6: a rare free match, never a missed one."""
    h = int.from_bytes(hashlib.blake2b(f"{kind}\0{text}".encode("utf-8", "surrogatepass"), digest_size=4).digest(),
                       "little")
    return chr(0x10000 + h % 0xF0000)


def _is_docstring(stmt: ast.AST) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def node_label(node: ast.AST, options: AstOptions = AstOptions()) -> str:
    """The symbol(s) one node writes into the linearization."""
    if isinstance(node, ast.Constant):
        lit = _LITERAL.get(type(node.value), _OTHER_LITERAL)
        return lit + _text_symbol("lit", repr(node.value)) if options.keep_literals else lit
    out = _SYMBOL[type(node)]
    if options.keep_names and type(node) in _NAMED:
        for f in _NAMED[type(node)]:
            v = getattr(node, f, None)
            for name in (v if isinstance(v, list) else [v]):
                if name:
                    out += _text_symbol("name", name)
    return out


def node_children(node: ast.AST) -> list[ast.AST]:
    """The children that count: not Load/Store/Del contexts, not a body's
    docstring, not a module's imports (constants have none)."""
    if isinstance(node, ast.Constant):
        return []
    kids = [c for c in ast.iter_child_nodes(node) if not isinstance(c, _CONTEXT)]
    if isinstance(node, _DOC_HOLDERS) and node.body:
        body = node.body
        drop = [body[0]] if _is_docstring(body[0]) else []
        if isinstance(node, ast.Module):
            drop += [st for st in body if isinstance(st, (ast.Import, ast.ImportFrom))]
        if drop:
            ids = {id(d) for d in drop}
            kids = [c for c in kids if id(c) not in ids]
    return kids


def linearize_tree(tree: ast.AST, options: AstOptions = AstOptions()) -> str:
    """The symbol string of a parsed tree: `node_label` of every node that
    counts (`node_children`), in pre-order."""
    out: list[str] = []
    stack = [tree]
    while stack:  # iterative: deep trees do not hit the recursion limit
        node = stack.pop()
        out.append(node_label(node, options))
        stack.extend(reversed(node_children(node)))
    return "".join(out)


def parse_snippet(source: str) -> ast.Module | None:
    """``ast.parse``, or None when the snippet does not parse (or is too deep to)."""
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return None


def linearize(source: str, options: AstOptions = AstOptions()) -> str | None:
    """The linearized, normalized AST of a snippet; None when it does not parse."""
    tree = parse_snippet(source)
    return None if tree is None else linearize_tree(tree, options)


def match_rate(a: str, b: str, score_cutoff: float = 0.0) -> float:
    """1 - Levenshtein(a, b) / max(|a|, |b|) for two linearized ASTs (0.0 below the cutoff)."""
    from rapidfuzz.distance import Levenshtein

    if not a and not b:
        return 1.0
    cut = score_cutoff - _SLACK if score_cutoff > 0 else None  # see AstIndex.match: keep a rate equal to the cutoff
    rate = float(Levenshtein.normalized_similarity(a, b, score_cutoff=cut))
    return rate if rate >= score_cutoff - 1e-12 else 0.0


def snippet_match_rate(a: str, b: str, options: AstOptions = AstOptions()) -> float | None:
    """AST match rate of two source snippets; None if either does not parse."""
    la, lb = linearize(a, options), linearize(b, options)
    if la is None or lb is None:
        return None
    return match_rate(la, lb)


# --------------------------------------------------------------------------- many pairs


@dataclass
class AstMatches:
    """Result of matching a batch of records against every problem.

    ``nearest[i]``/``rate[i]``: the record's best problem (index) and rate,
    -1/0.0 when no problem reaches ``score_cutoff``; ``problem_best[p]`` /
    ``problem_best_record[p]``: each problem's best rate in the batch and the
    record index holding it; ``problem_counts[p, k]``: records of the batch
    with rate >= ``thresholds[k]``; ``pairs``: record x problem pairs covered
    (all of them, whether the length band or the cutoff decided them).
    """

    nearest: np.ndarray
    rate: np.ndarray
    problem_best: np.ndarray
    problem_best_record: np.ndarray
    problem_counts: np.ndarray
    pairs: int
    compared: int  # pairs inside the length band, handed to rapidfuzz


class AstIndex:
    """The problems' linearized ASTs, sorted by length, for all-pairs matching.

    ``score_cutoff`` is the lowest rate of interest (the smallest τ): pairs
    below it are neither computed exactly nor reported. Problems smaller
    than ``min_nodes`` are left out (listed in ``too_small``).
    """

    def __init__(self, problems: Sequence[str | None], score_cutoff: float, thresholds: Sequence[float] = (),
                 min_nodes: int = 1, workers: int = 1):
        if not 0 < score_cutoff <= 1:
            raise ValueError(f"score_cutoff must be in (0, 1], got {score_cutoff}")
        self.n_problems = len(problems)
        self.score_cutoff = float(score_cutoff)
        self.thresholds = np.asarray(sorted(thresholds), dtype=np.float64)
        self.min_nodes = max(1, int(min_nodes))
        self.workers = workers
        usable = [(len(s), i) for i, s in enumerate(problems) if s is not None and len(s) >= self.min_nodes]
        self.too_small = [i for i, s in enumerate(problems) if s is not None and len(s) < self.min_nodes]
        usable.sort()
        self._order = np.array([i for _, i in usable], dtype=np.int64)
        self._lens = np.array([n for n, _ in usable], dtype=np.int64)
        self._strings = [problems[i] for i in self._order]

    def match(self, records: Sequence[str | None]) -> AstMatches:
        """Best problem per record and best record per problem, for one batch."""
        from rapidfuzz import process
        from rapidfuzz.distance import Levenshtein

        n, p = len(records), self.n_problems
        nearest = np.full(n, -1, dtype=np.int64)
        rate = np.zeros(n, dtype=np.float64)
        pbest = np.zeros(p, dtype=np.float64)
        pbest_rec = np.full(p, -1, dtype=np.int64)
        pcounts = np.zeros((p, len(self.thresholds)), dtype=np.int64)
        lens = np.array([len(s) if s is not None else 0 for s in records], dtype=np.int64)
        ok = np.nonzero(lens >= self.min_nodes)[0]
        compared = 0
        if len(ok) and len(self._strings):
            # Records sorted by length: each problem's length band is one slice.
            ok = ok[np.argsort(lens[ok], kind="stable")]
            rlens = lens[ok]
            c = self.score_cutoff
            lo = np.searchsorted(rlens, np.ceil(self._lens * c - 1e-9), side="left")
            hi = np.searchsorted(rlens, np.floor(self._lens / c + 1e-9), side="right")
            sorted_records = [records[i] for i in ok]
            # Problems whose bands overlap are matched in one cdist call (rows = problems),
            # which rapidfuzz spreads over `workers` threads.
            for a, b, r0, r1 in _band_groups(lo, hi):
                choices = sorted_records[r0:r1]
                # rapidfuzz's cutoff loses a rate exactly equal to it (float rounding: 4 edits in 20
                # symbols, 0.8, fails score_cutoff=0.8). Ask for a little less, then cut exactly.
                scores = process.cdist(self._strings[a:b], choices, scorer=Levenshtein.normalized_similarity,
                                       score_cutoff=c - _SLACK, dtype=np.float64, workers=self.workers)
                scores[scores < c - 1e-12] = 0.0
                compared += (b - a) * (r1 - r0)
                self._fold(scores, a, r0, ok, nearest, rate, pbest, pbest_rec, pcounts)
        return AstMatches(nearest, rate, pbest, pbest_rec, pcounts, pairs=n * p, compared=compared)

    def _fold(self, scores: np.ndarray, a: int, r0: int, ok: np.ndarray, nearest: np.ndarray, rate: np.ndarray,
              pbest: np.ndarray, pbest_rec: np.ndarray, pcounts: np.ndarray) -> None:
        if scores.size == 0:
            return
        scores = scores.astype(np.float64)
        # Per record (column): the best problem of this group.
        col_best = scores.argmax(axis=0)
        col_rate = scores[col_best, np.arange(scores.shape[1])]
        rec_idx = ok[r0:r0 + scores.shape[1]]
        better = col_rate > rate[rec_idx]
        rate[rec_idx[better]] = col_rate[better]
        nearest[rec_idx[better]] = self._order[a + col_best[better]]
        # Per problem (row): best record and counts per threshold.
        row_best = scores.argmax(axis=1)
        row_rate = scores[np.arange(scores.shape[0]), row_best]
        probs = self._order[a:a + scores.shape[0]]
        improve = row_rate > pbest[probs]
        pbest[probs[improve]] = row_rate[improve]
        pbest_rec[probs[improve]] = rec_idx[row_best[improve]]
        for k, t in enumerate(self.thresholds):
            pcounts[probs, k] += (scores >= t - 1e-12).sum(axis=1)


def _band_groups(lo: np.ndarray, hi: np.ndarray, slack: float = 1.5) -> Iterable[tuple[int, int, int, int]]:
    """Group consecutive problems (sorted by length) whose record slices
    overlap, as long as the union slice stays within ``slack`` x the largest
    single slice: one cdist call per group, little wasted comparison."""
    n = len(lo)
    a = 0
    while a < n:
        if hi[a] <= lo[a]:
            a += 1
            continue
        b, r0, r1, widest = a + 1, int(lo[a]), int(hi[a]), int(hi[a] - lo[a])
        while b < n and hi[b] > lo[b]:
            n0, n1 = min(r0, int(lo[b])), max(r1, int(hi[b]))
            w = max(widest, int(hi[b] - lo[b]))
            if (n1 - n0) > slack * w:
                break
            r0, r1, widest = n0, n1, w
            b += 1
        yield a, b, r0, r1
        a = b
