"""The option reference: per-section Markdown tables generated from the typed
config (`option(doc=..., ge=..., execution=...)`) and the stage registry.

`phi1 config --reference` writes them into ``docs/reference/``; a test fails
when the committed files differ from what this module generates, so the
reference cannot drift from the code. Also the one map from stages and
commands to their docs pages (used by the CLI's help).

Cheap to import: no torch, no datatrove.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from phi1.config import PipelineConfig, execution_fields
from phi1.errors import Phi1Error

DEFAULT_OUT = Path("docs") / "reference"
REGENERATE = "phi1 config --reference"

# Where each stage and command is documented (paths relative to the repository
# root). `phi1 <command> --help` names the page; tests/docs checks every page exists.
STAGE_DOCS = {
    "ingest": "docs/stages/ingest.md",
    "annotate": "docs/stages/annotate.md",
    "embed": "docs/stages/embed.md",
    "classifier": "docs/stages/classifier.md",
    "filter": "docs/stages/filter.md",
    "mine": "docs/stages/mine.md",
    "synth": "docs/synth.md",
    "decontam": "docs/decontam.md",
    "tokenizer": "docs/stages/tokenizer.md",
    "tokenize": "docs/stages/tokenize.md",
    "pretrain": "docs/stages/pretrain.md",
    "finetune": "docs/stages/finetune.md",
    "generate": "docs/stages/generate.md",
    "execute": "docs/stages/execute.md",
    "grade": "docs/stages/grade.md",
}
COMMAND_DOCS = {
    "": "docs/index.md",
    "run": "docs/run-directory.md",
    "stages": "docs/configuration.md",
    "config": "docs/reference/index.md",
    "export": "docs/stages/pretrain.md",
    "contamination": "docs/decontam.md",
    "synth-plan": "docs/synth.md",
    "report": "docs/report.md",
    "ablation": "docs/ablation.md",
}


def docs_page(command: str) -> str:
    """The docs page of a stage or command ('' = the docs' front page)."""
    return STAGE_DOCS.get(command) or COMMAND_DOCS.get(command) or COMMAND_DOCS[""]


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Row:
    """One option of one table."""

    key: str
    type: str
    default: str
    range: str
    kind: str  # "identity" | "execution" | "per key" (a table holding both)
    doc: str


@dataclass(frozen=True)
class Table:
    """The options of one (sub)section: ``[ingest.executor]``, ``[[ingest.sources]]``."""

    path: str  # dotted, e.g. "ingest.executor"
    array: bool  # a list of tables ([[...]])
    doc: str
    rows: tuple[Row, ...]
    module: str


def builtin_sections() -> dict[str, Any]:
    """Section name -> dataclass, for every section of phi1 itself: the ones
    of `PipelineConfig` and those of phi1's stages declared outside it
    (plugins installed from other packages are left out: the reference is of
    phi1)."""
    from phi1.registry import all_stages

    hints = get_type_hints(PipelineConfig)
    out = {f.name: hints[f.name] for f in dataclasses.fields(PipelineConfig)
           if f.init and not f.metadata.get("internal")}
    for spec in all_stages():
        if spec.section_name not in out and spec.config_class is not None and spec.entry.startswith("phi1."):
            out[spec.section_name] = spec.config_class
    return out


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(args) != len(get_args(tp)):
            return args[0], True
    return tp, False


def type_name(tp: Any) -> str:
    """A short, TOML-minded name of a field's type."""
    inner, optional = _unwrap_optional(tp)
    if optional:
        return f"{type_name(inner)} or unset"
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(toml_value(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        (item, *_rest) = get_args(tp) or (Any,)
        if dataclasses.is_dataclass(item):
            return "list of tables"
        return f"list of {type_name(item)}"
    if origin is dict:
        k, v = get_args(tp) or (str, Any)
        return f"table {{{type_name(k)} = {type_name(v)}}}"
    if dataclasses.is_dataclass(tp):
        return "table"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def toml_value(v: Any) -> str:
    """A value as it is written in a TOML config."""
    if v is None:
        return "unset"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v == int(v) and abs(v) < 1e15:
            return f"{v:.1f}"
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    if dataclasses.is_dataclass(v):
        return "(table)"
    return repr(v)


def _toml_key(k: Any) -> str:
    k = str(k)
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def range_text(meta: typing.Mapping[str, Any]) -> str:
    parts = []
    for op, word in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
        bound = meta.get(op)
        if bound is not None:
            parts.append(f"{word} {toml_value(bound)}")
    return ", ".join(parts)


def _class_doc(cls: Any) -> str:
    doc = inspect.getdoc(cls) or ""
    if doc.startswith(f"{cls.__name__}("):  # dataclass's generated signature, not a docstring
        return ""
    return doc


def _md(text: str) -> str:
    """Table-cell safe: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _inputs_of(section: str) -> dict[str, Any]:
    """Key -> `Input` for the keys of ``section`` that name datasets a stage reads."""
    from phi1.registry import all_stages

    return {i.key: i for spec in all_stages() if spec.section_name == section for i in spec.consumes}


def _input_type(inp: Any) -> str:
    kinds = " or ".join(inp.kinds)
    if inp.mixture:
        return f"datasets ({kinds}): {{reference = weight}}, a list or one reference"
    return f"dataset ({kinds}): a reference" + (" or a path / hub name" if inp.external else "")


def tables(name: str, cls: Any) -> list[Table]:
    """Every table of section ``name``: the section itself, then its sub-tables, depth first."""
    out: list[Table] = []
    _walk(name, cls, False, False, out, _inputs_of(name))
    return out


def _walk(path: str, cls: Any, array: bool, inherited_execution: bool, out: list[Table],
          inputs: dict[str, Any] | None = None) -> None:
    hints = get_type_hints(cls)
    rows: list[Row] = []
    subs: list[tuple[str, Any, bool, bool]] = []
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("internal"):
            continue
        tp = hints[f.name]
        execution = inherited_execution or bool(f.metadata.get("execution"))
        inner, _opt = _unwrap_optional(tp)
        default = _default(f)
        kind = "execution" if execution else "identity"
        if dataclasses.is_dataclass(inner):
            subs.append((f"{path}.{f.name}", inner, False, execution))
            kind = _table_kind(inner, execution)
            shown = f"see [`[{path}.{f.name}]`](#{_anchor(f'{path}.{f.name}', False)})"
        elif get_origin(inner) in (list, tuple) and get_args(inner) and dataclasses.is_dataclass(get_args(inner)[0]):
            item = get_args(inner)[0]
            subs.append((f"{path}.{f.name}", item, True, execution))
            kind = _table_kind(item, execution)
            n = len(default) if isinstance(default, (list, tuple)) else 0
            shown = (f"{n} table{'s' if n != 1 else ''} (see [`[[{path}.{f.name}]]`]"
                     f"(#{_anchor(f'{path}.{f.name}', True)}))") if n else "`[]`"
        else:
            shown = "required" if default is dataclasses.MISSING else f"`{toml_value(default)}`"
        shown_type = _input_type(inputs[f.name]) if inputs and f.name in inputs else type_name(tp)
        rows.append(Row(f.name, shown_type, shown, range_text(f.metadata), kind, f.metadata.get("doc", "")))
    out.append(Table(path, array, _class_doc(cls), tuple(rows), cls.__module__))
    for sub_path, sub_cls, sub_array, sub_exec in subs:
        _walk(sub_path, sub_cls, sub_array, sub_exec, out)


def _table_kind(cls: Any, inherited_execution: bool) -> str:
    """The kind of a table-valued option: that of all its keys, or "per key"."""
    if inherited_execution:
        return "execution"
    n_exec, n_all = len(execution_fields(cls)), _count_leaves(cls)
    return "execution" if n_exec == n_all else ("identity" if n_exec == 0 else "per key")


def _count_leaves(cls: Any) -> int:
    hints = get_type_hints(cls)
    n = 0
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("internal"):
            continue
        inner, _opt = _unwrap_optional(hints[f.name])
        n += _count_leaves(inner) if dataclasses.is_dataclass(inner) and not f.metadata.get("execution") else 1
    return n


def _heading(path: str, array: bool) -> str:
    return f"[[{path}]]" if array else f"[{path}]"


def _anchor(path: str, array: bool) -> str:
    """GitHub's anchor for a heading ``[path]`` / ``[[path]]`` written in backticks."""
    return "".join(c for c in _heading(path, array).lower() if c.isalnum() or c in "-_ ").replace(" ", "-")


# --------------------------------------------------------------------------- rendering


def _rel(page: str) -> str:
    """A docs page (repository path) as a link from docs/reference/."""
    return "../" + page.removeprefix("docs/") if page.startswith("docs/") else "../../" + page


def _module_file(module: str) -> str:
    return "src/" + module.replace(".", "/") + ".py"


def _stage_lines(name: str) -> list[str]:
    """What the stage of section ``name`` reads and writes, from the registry."""
    from phi1.registry import all_stages

    lines = []
    cfg = PipelineConfig()
    for spec in all_stages():
        if not spec.entry.startswith("phi1."):
            continue
        if name == spec.section_name:
            page = docs_page(spec.name)
            lines.append(f"Stage **`{spec.name}`** ({spec.help}; paper: {spec.paper or '—'}). "
                         f"Documented in [{page}]({_rel(page)}).")
            lines.append("")
            reads = [f"`{i.key}` ({' or '.join(i.kinds)}"
                     + (", a mixture `{reference = weight}`" if i.mixture else "")
                     + (", optional" if i.optional else "") + (", or a path / hub name" if i.external else "")
                     + (", only in some configs" if i.when else "") + ")"
                     for i in spec.consumes]
            lines.append("- reads: " + (", ".join(reads) if reads else "its sources (no dataset inputs)"))
            if spec.produces_for:
                lines.append("- writes: datasets that depend on the config (see the stage's page)")
            else:
                outs = [f"`{spec.name if not o.name else spec.name + '.' + o.name}` ({o.kind}, "
                        f"`{spec.name}/{'' if o.path == '.' else o.path}`)" for o in spec.outputs(cfg)]
                lines.append("- writes: " + ", ".join(outs))
            hashed = ", ".join(f"`[{s}]`" for s in spec.sections)
            lines.append(f"- identity: the identity options of {hashed} and `run.seed`")
            lines.append("")
        elif name in spec.also_hashes:
            lines.append(f"The identity options of this section are also part of stage "
                         f"[`{spec.name}`]({_rel(docs_page(spec.name))})'s identity.")
            lines.append("")
    return lines


def render_section(name: str, cls: Any) -> str:
    """The Markdown reference of one config section."""
    all_tables = tables(name, cls)
    first = all_tables[0]
    n_exec = len(execution_fields(cls))
    out = [
        f"<!-- Generated by `{REGENERATE}` from {_module_file(cls.__module__)}; do not edit by hand. -->",
        "",
        f"# `[{name}]`",
        "",
    ]
    if first.doc:
        out += [first.doc, ""]
    out += _stage_lines(name)
    out += [f"Back to [the option reference](index.md). *identity*: part of the stage's identity hash "
            f"(changing it makes the stage stale); *execution*: how it runs, not what it produces "
            f"(never makes finished work stale). This section has {n_exec} execution option"
            f"{'s' if n_exec != 1 else ''}.", ""]
    for i, t in enumerate(all_tables):
        if i:
            out += [f"## `{_heading(t.path, t.array)}`", ""]
            if t.array:
                out += ["A list of tables: write one `[[" + t.path + "]]` block per item.", ""]
            if t.doc:
                out += [t.doc, ""]
            if t.module != first.module:
                out += [f"Defined in `{_module_file(t.module)}`.", ""]
        out += ["| key | type | default | range | kind | doc |", "|---|---|---|---|---|---|"]
        for r in t.rows:
            out.append(f"| `{r.key}` | {_md(r.type)} | {_md(r.default)} | {_md(r.range) or '—'} | {r.kind} | "
                       f"{_md(r.doc) or '—'} |")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def render_index(sections: dict[str, Any]) -> str:
    lines = [
        f"<!-- Generated by `{REGENERATE}`; do not edit by hand. -->",
        "",
        "# Option reference",
        "",
        "Every key a phi1 config takes, generated from the typed config sections (the",
        "`option(doc=..., ge=..., execution=...)` fields of each package's `config.py`).",
        f"`{REGENERATE}` rewrites these pages and `make test` fails when they differ from",
        "the code, so they are always the options of this version. How configs are",
        "loaded, overridden with `--set` and validated: [configuration](../configuration.md).",
        "",
        "*identity* options are hashed into the identity of the stages that read the",
        "section: changing one makes those stages (and everything downstream) stale.",
        "*execution* options (workers, devices, batch sizes that do not change results,",
        "endpoints, logging) are not: changing one never re-runs finished work and an",
        "interrupted attempt resumes under the new value.",
        "",
        "| section | options | execution | what |",
        "|---|---|---|---|",
    ]
    for name, cls in sections.items():
        n = sum(len(t.rows) for t in tables(name, cls))
        doc = _class_doc(cls).split("\n\n")[0]
        lines.append(f"| [`[{name}]`]({name}.md) | {n} | {len(execution_fields(cls))} | {_md(doc) or '—'} |")
    return "\n".join(lines) + "\n"


def generate(sections: dict[str, Any] | None = None) -> dict[str, str]:
    """File name -> content of the whole reference."""
    sections = sections if sections is not None else builtin_sections()
    files = {"index.md": render_index(sections)}
    for name, cls in sections.items():
        files[f"{name}.md"] = render_section(name, cls)
    return files


def _generated_here(out_dir: Path) -> list[Path]:
    """The files of ``out_dir`` this module wrote (they start with its marker);
    anything else there is left alone."""
    if not out_dir.is_dir():
        return []
    found = []
    for p in sorted(out_dir.glob("*.md")):
        try:
            head = p.read_text(encoding="utf-8", errors="replace")[:200]
        except OSError:
            continue
        if head.startswith(f"<!-- Generated by `{REGENERATE}`"):
            found.append(p)
    return found


def differences(out_dir: Path, files: dict[str, str]) -> list[str]:
    """What differs between ``out_dir`` and ``files``: one line per file."""
    problems = []
    for name, text in files.items():
        p = out_dir / name
        if not p.exists():
            problems.append(f"{p}: missing")
        elif p.read_text(encoding="utf-8") != text:
            problems.append(f"{p}: differs from the code")
    for p in _generated_here(out_dir):
        if p.name not in files:
            problems.append(f"{p}: no such section any more")
    return problems


def write_reference(out_dir: Path = DEFAULT_OUT, check: bool = False) -> list[str]:
    """Write the reference into ``out_dir`` (or, with ``check``, only compare).
    Returns the differences found before writing."""
    files = generate()
    problems = differences(out_dir, files)
    if check:
        return problems
    if out_dir.exists() and not out_dir.is_dir():
        raise Phi1Error(f"{out_dir} is not a folder")
    from phi1.files import write_atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        p = out_dir / name
        if not p.exists() or p.read_text(encoding="utf-8") != text:
            write_atomic(p, text)
    for p in _generated_here(out_dir):
        if p.name not in files:
            p.unlink()
    return problems
