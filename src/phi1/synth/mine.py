"""The `mine` stage: CodeExercises-format records from the filtered corpus.

Every module-level function with a docstring becomes an exercise, shaped like
a HumanEval problem::

    prompt   = the module's imports that the function uses
               + decorators, signature and docstring, exactly as in the source
    solution = the rest of the function body, exactly as in the source

so ``prompt + solution`` is a program that defines the original function.
Each candidate is checked: the program must compile and its function must
have the same AST as the original (so it behaves like it). With
``self_contained`` (default) functions that read module-level names other
than imports and builtins (helpers, constants, ``global``) are dropped: they
would not run on their own, and a model cannot see those names.

Dropped too: methods and nested functions (not module level), missing or
short docstrings, trivial bodies (``pass``, ``...``, ``raise
NotImplementedError``, a lone ``return <constant>``), bodies under
``min_body_lines`` code lines, programs over ``max_chars``, relative imports.
Duplicates (same program after ``ast.unparse``: formatting and comments
ignored) keep their first occurrence in corpus order. Train/validation is a
seeded split by source document, so one module never feeds both.
"""

from __future__ import annotations

import ast
import builtins
import collections
import hashlib
import io
import re
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from phi1.documents import is_validation, weighted_documents
from phi1.errors import InputError
from phi1.synth.records import ExerciseRecord, write_exercises
from phi1.workers import ordered_map

TRAIN_FILE = "train.jsonl.gz"
VAL_FILE = "val.jsonl.gz"
_BUILTINS = frozenset(dir(builtins))
_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)
CHUNK_DOCS = 64
_TOP_LEVEL_DEF = re.compile(r"^(?:async[ \t]+)?def[ \t]", re.MULTILINE)


@dataclass(frozen=True)
class MineOptions:
    min_body_lines: int = 2
    min_docstring_chars: int = 16
    max_chars: int = 4000
    self_contained: bool = True


# --------------------------------------------------------------------------- one module


def _lines(text: str) -> list[str]:
    """Source lines with their endings, split where Python's tokenizer splits (\\n, \\r\\n, \\r)."""
    return io.StringIO(text, newline="").readlines()


def _is_trivial(body: list[ast.stmt]) -> bool:
    if not body:
        return True
    if len(body) > 1:
        return False
    stmt = body[0]
    if isinstance(stmt, ast.Pass):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
        return True  # `...` or a second string
    if isinstance(stmt, ast.Raise):
        exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
        return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
    if isinstance(stmt, ast.Return):
        if stmt.value is None:
            return True
        try:
            ast.literal_eval(stmt.value)
            return True
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return False
    return False


def _code_lines(text: str) -> int:
    return sum(1 for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#"))


class _Names(ast.NodeVisitor):
    """Names a function reads, and names it binds anywhere inside itself."""

    def __init__(self) -> None:
        self.loads: set[str] = set()
        self.bound: set[str] = set()
        self.uses_global = False

    def visit_Name(self, node: ast.Name) -> None:
        (self.loads if isinstance(node.ctx, ast.Load) else self.bound).add(node.id)

    def visit_arg(self, node: ast.arg) -> None:
        self.bound.add(node.arg)
        self.generic_visit(node)

    def _def(self, node: Any) -> None:
        self.bound.add(node.name)
        self.generic_visit(node)

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _def

    def visit_alias(self, node: ast.alias) -> None:
        self.bound.add((node.asname or node.name).split(".")[0])

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self.bound.add(node.name)
        self.generic_visit(node)

    def visit_Global(self, node: ast.Global) -> None:
        self.uses_global = True

    def visit_MatchAs(self, node: Any) -> None:
        if node.name:
            self.bound.add(node.name)
        self.generic_visit(node)

    def visit_MatchStar(self, node: Any) -> None:
        if node.name:
            self.bound.add(node.name)

    def visit_MatchMapping(self, node: Any) -> None:
        if node.rest:
            self.bound.add(node.rest)
        self.generic_visit(node)


@dataclass
class _Imports:
    """The module's top-level imports, by the name each binds."""

    by_name: dict[str, list[tuple[int, ast.stmt, ast.alias]]]
    future: list[str]
    star: bool

    @classmethod
    def of(cls, module: ast.Module) -> "_Imports":
        by_name: dict[str, list[tuple[int, ast.stmt, ast.alias]]] = collections.defaultdict(list)
        future, star = [], False
        for pos, stmt in enumerate(module.body):
            if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
                future.append(ast.unparse(stmt))
            elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
                for alias in stmt.names:
                    if alias.name == "*":
                        star = True
                        continue
                    bound = alias.asname or alias.name.split(".")[0]
                    by_name[bound].append((pos, stmt, alias))
        return cls(dict(by_name), future, star)

    def lines_for(self, names: Iterable[str]) -> tuple[list[str], bool]:
        """Import lines binding ``names`` (source order), and whether any is relative."""
        picked: dict[int, tuple[ast.stmt, list[ast.alias]]] = {}
        relative = False
        for name in names:
            for pos, stmt, alias in self.by_name.get(name, ()):
                entry = picked.setdefault(pos, (stmt, []))
                if alias not in entry[1]:
                    entry[1].append(alias)
                relative |= isinstance(stmt, ast.ImportFrom) and stmt.level > 0
        lines = []
        for pos in sorted(picked):
            stmt, aliases = picked[pos]
            aliases = [a for a in stmt.names if a in aliases]  # the source's order
            if isinstance(stmt, ast.Import):
                lines.extend(ast.unparse(ast.Import(names=[a])) for a in aliases)
            else:
                lines.append(ast.unparse(ast.ImportFrom(module=stmt.module, names=aliases, level=stmt.level)))
        return lines, relative


def mine_source(text: str, doc_id: str, path: str = "", options: MineOptions = MineOptions()
                ) -> tuple[list[ExerciseRecord], collections.Counter]:
    """Exercise records from one module's source, and why other functions were dropped."""
    stats: collections.Counter = collections.Counter()
    if not _TOP_LEVEL_DEF.search(text):
        return [], stats  # parsing is most of the cost: skip modules without candidates
    try:
        module = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        stats["unparseable_docs"] += 1
        return [], stats
    lines = _lines(text)
    imports: _Imports | None = None
    out = []
    for node in module.body:
        if not isinstance(node, _FUNCS):
            continue
        stats["functions"] += 1
        imports = imports or _Imports.of(module)
        record, reason = _exercise(node, lines, imports, doc_id, path, options)
        if record is None:
            stats[f"dropped_{reason}"] += 1
        else:
            out.append(record)
    return out, stats


def _exercise(node: Any, lines: list[str], imports: _Imports, doc_id: str, path: str, opt: MineOptions
              ) -> tuple[ExerciseRecord | None, str]:
    doc = ast.get_docstring(node, clean=True)
    if doc is None:
        return None, "no_docstring"
    if len(doc.strip()) < opt.min_docstring_chars:
        return None, "short_docstring"
    if _is_trivial(node.body[1:]):
        return None, "trivial"
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    doc_end = node.body[0].end_lineno
    if node.body[1].lineno <= doc_end:
        return None, "layout"  # code shares the docstring's line: no clean prompt/solution cut
    head = "".join(lines[first - 1: doc_end])
    solution = "".join(lines[doc_end: node.end_lineno])
    if not solution.endswith(("\n", "\r")):
        solution += "\n"
    if not head.endswith(("\n", "\r")):
        return None, "layout"
    if _code_lines(solution) < opt.min_body_lines:
        return None, "short_body"

    names = _Names()
    names.visit(node)
    free = names.loads - names.bound - {node.name}
    import_lines, relative = imports.lines_for(sorted(free))
    if relative:
        return None, "relative_import"
    unresolved = {n for n in free if n not in imports.by_name and n not in _BUILTINS}
    if opt.self_contained and (unresolved or names.uses_global):
        return None, "module_context"

    preamble = imports.future + import_lines
    prompt = ("\n".join(preamble) + "\n\n\n" if preamble else "") + head
    program = prompt + solution
    if len(program) > opt.max_chars:
        return None, "too_long"
    tree = _checked_tree(program, node)
    if tree is None:
        return None, "invalid"
    source = path or doc_id
    record = ExerciseRecord(
        id=f"{doc_id}:{node.name}:{node.lineno}",
        prompt=prompt,
        solution=solution,
        source=source,
        metadata={"origin": "mined", "doc_id": doc_id, "path": path, "function": node.name,
                  "lineno": node.lineno, "key": _key(ast.unparse(tree))},
    )
    return record, ""


def _checked_tree(program: str, original: Any) -> ast.Module | None:
    """The program's AST if it compiles and defines a function with the original's exact AST."""
    try:
        tree = ast.parse(program)
        compile(tree, "<exercise>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    funcs = [n for n in tree.body if isinstance(n, _FUNCS)]
    if len(funcs) == 1 and ast.dump(funcs[0]) == ast.dump(original):
        return tree
    return None


def _key(canon: str) -> str:
    return hashlib.sha1(canon.encode("utf-8")).hexdigest()


def dedup_key(record: ExerciseRecord) -> str:
    """Formatting- and comment-insensitive identity of a record's program."""
    try:
        return _key(ast.unparse(ast.parse(record.text)))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return _key("\n".join(ln.strip() for ln in record.text.splitlines() if ln.strip()))


# --------------------------------------------------------------------------- a corpus


def _mine_batch(batch: list[tuple[str, str, str]], options: MineOptions
                ) -> tuple[list[ExerciseRecord], collections.Counter]:
    records: list[ExerciseRecord] = []
    stats: collections.Counter = collections.Counter()
    for doc_id, text, path in batch:
        recs, st = mine_source(text, doc_id, path, options)
        records.extend(recs)
        stats.update(st)
        stats["docs"] += 1
    return records, stats


def _batches(docs: Iterable[Any], size: int) -> Iterator[list[tuple[str, str, str]]]:
    batch: list[tuple[str, str, str]] = []
    for d in docs:
        batch.append((d.id, d.text, str(d.metadata.get("path", ""))))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class MineResult:
    train: list[ExerciseRecord]
    val: list[ExerciseRecord]
    stats: collections.Counter


def mine_documents(docs: Iterable[Any], options: MineOptions = MineOptions(), validation_fraction: float = 0.0,
                   seed: int = 0, workers: int = 1, progress: bool = False) -> MineResult:
    """Mine, deduplicate and split records from documents (``Doc`` objects), deterministically."""
    from tqdm.auto import tqdm

    stats: collections.Counter = collections.Counter()
    seen: set[str] = set()
    train, val = [], []
    bar = tqdm(unit="doc", desc="mine", disable=not progress, mininterval=1.0)
    try:
        for records, st in ordered_map(_mine_batch, _batches(docs, CHUNK_DOCS), workers, options):
            stats.update(st)
            bar.update(st["docs"])
            for r in records:
                key = r.metadata.get("key") or dedup_key(r)
                if key in seen:
                    stats["dropped_duplicate"] += 1
                    continue
                seen.add(key)
                doc_id = r.metadata.get("doc_id", r.id)
                (val if is_validation(doc_id, validation_fraction, seed) else train).append(r)
            bar.set_postfix(exercises=len(train) + len(val), refresh=False)
    finally:
        bar.close()
    stats["kept"] = len(train) + len(val)
    return MineResult(train, val, stats)


def run(ctx: Any) -> Any:
    from phi1.stage import StageResult

    cfg = ctx.section
    inputs = ctx.mixture("inputs")
    docs = " + ".join(str(d.path) for d in inputs)
    seed, validation_fraction = ctx.config.run.seed, ctx.config.run.validation_fraction
    options = MineOptions(cfg.min_body_lines, cfg.min_docstring_chars, cfg.max_chars, cfg.self_contained)
    started = time.time()
    result = mine_documents((doc for _, doc in weighted_documents(inputs, seed)), options, validation_fraction,
                            seed, cfg.workers, progress=ctx.is_main)
    s = result.stats
    if s["docs"] == 0:
        raise InputError(f"mine: no documents in {docs}")
    if s["kept"] == 0:
        why = ", ".join(f"{k[8:]} {v}" for k, v in sorted(s.items()) if k.startswith("dropped_")) or "none found"
        raise InputError(f"mine: no exercises from {s['docs']} documents in {docs} ({s['functions']} top-level "
                         f"functions; dropped: {why})")
    if validation_fraction > 0 and not result.val:
        ctx.log("warning: no validation exercises; raise run.validation_fraction")
    out = ctx.output()
    write_exercises(out / TRAIN_FILE, result.train)
    write_exercises(out / VAL_FILE, result.val)
    seconds = time.time() - started
    dropped = {k: v for k, v in sorted(s.items()) if k.startswith("dropped_")}
    return StageResult(
        counts={"docs": s["docs"], "functions": s["functions"], "exercises": s["kept"],
                "train": len(result.train), "val": len(result.val),
                "unparseable_docs": s["unparseable_docs"], **dropped},
        metrics={"seconds": round(seconds, 2),
                 "train_chars": sum(len(r.text) for r in result.train)},
        summary=[
            f"{s['kept']:,} exercises ({len(result.train):,} train, {len(result.val):,} val) from "
            f"{s['functions']:,} top-level functions in {s['docs']:,} docs, {seconds:.1f}s",
            "dropped: " + (", ".join(f"{k[8:]} {v:,}" for k, v in dropped.items()) or "none"),
            f"-> {ctx.run_dir / ctx.name / TRAIN_FILE}, {VAL_FILE}",
        ],
    )
