"""Typed run configuration: one TOML file, one section per stage.

Every section is a dataclass; `load_config` turns a TOML file plus ``--set``
overrides into a validated `PipelineConfig`.  Validation happens before any
work: unknown keys (with a close-match suggestion), wrong types and
out-of-range values raise `ConfigError` with one line naming the key.

Constraints live next to the field they constrain, via `option(...)`:

    lr: float = option(1e-3, gt=0, doc="peak learning rate")

This module must stay cheap to import (no torch, no datatrove): the CLI
validates a config in well under a second.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import copy
import datetime
import json
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


from phi1.sections import (  # noqa: F401  (re-exported: the public config API)
    ConfigError,
    ExecutorConfig,
    RayConfig,
    RunConfig,
    SlurmConfig,
    option,
)
from phi1.ablation.config import AblationConfig  # noqa: E402
from phi1.corpus.config import IngestConfig  # noqa: E402
from phi1.evaluate.config import ExecuteConfig, GenerateConfig, GradeConfig  # noqa: E402
from phi1.model.config import ModelConfig, TokenizerConfig  # noqa: E402
from phi1.quality.config import (  # noqa: E402
    AnnotateConfig,
    ClassifierConfig,
    EmbedConfig,
    FilterConfig,
)
from phi1.decontam.config import DecontamConfig  # noqa: E402
from phi1.synth.config import MineConfig, SynthConfig  # noqa: E402
from phi1.train.config import FinetuneConfig, PretrainConfig, TokenizeConfig  # noqa: E402


@dataclass
class PipelineConfig:
    """The whole run: one attribute per TOML section."""

    run: RunConfig = option(default_factory=RunConfig)
    ingest: IngestConfig = option(default_factory=IngestConfig)
    annotate: AnnotateConfig = option(default_factory=AnnotateConfig)
    embed: EmbedConfig = option(default_factory=EmbedConfig)
    classifier: ClassifierConfig = option(default_factory=ClassifierConfig)
    filter: FilterConfig = option(default_factory=FilterConfig)
    tokenizer: TokenizerConfig = option(default_factory=TokenizerConfig)
    tokenize: TokenizeConfig = option(default_factory=TokenizeConfig)
    mine: MineConfig = option(default_factory=MineConfig)
    synth: SynthConfig = option(default_factory=SynthConfig)
    decontam: DecontamConfig = option(default_factory=DecontamConfig)
    model: ModelConfig = option(default_factory=ModelConfig)
    pretrain: PretrainConfig = option(default_factory=PretrainConfig)
    finetune: FinetuneConfig = option(default_factory=FinetuneConfig)
    generate: GenerateConfig = option(default_factory=GenerateConfig)
    execute: ExecuteConfig = option(default_factory=ExecuteConfig)
    grade: GradeConfig = option(default_factory=GradeConfig)
    ablation: AblationConfig = option(default_factory=AblationConfig)  # `phi1 ablation` only; no stage reads it

    # Where the config came from; not a TOML key.
    source: str = field(default="<defaults>", compare=False, repr=False, metadata={"internal": True})
    # Sections of stages registered outside phi1 (entry points, tests): name -> dataclass.
    plugins: dict[str, Any] = field(default_factory=dict, compare=False, repr=False, metadata={"internal": True})
    # The file's text and the --set overrides, to say where a key was set (`where_set`).
    source_text: str = field(default="", compare=False, repr=False, metadata={"internal": True})
    overrides: list[str] = field(default_factory=list, compare=False, repr=False, metadata={"internal": True})

    def where_set(self, key: str) -> str:
        """Where ``key`` (dotted) got its value: ``--set KEY`` when an override set it
        (or a table holding it), else ``FILE:LINE`` (``FILE`` when the line is not found)."""
        parts = _key_parts(key)
        for item in reversed(self.overrides):
            name = item.partition("=")[0].strip()
            try:
                op = _split_key(name)
            except ConfigError:
                continue
            n = min(len(op), len(parts))
            if op[:n] == parts[:n]:
                return f"--set {name}"
        line = _line_of(self.source_text, key)
        return f"{self.source}:{line}" if line else self.source

    @property
    def run_dir(self) -> Path:
        # "~/runs" is the user's home, never a folder named "~" in the current one
        return Path(self.run.root).expanduser() / self.run.name

    def section(self, name: str) -> Any:
        if name in self.plugins:
            return self.plugins[name]
        if name in _hints(PipelineConfig):
            return getattr(self, name)
        raise ConfigError(f"no config section [{name}]")

    def section_hash(self, *names: str) -> str:
        """Stable hash of the *identity* fields of the named sections (what a
        stage's manifest records); execution fields are left out."""
        # run.seed is part of every stage's identity: a new seed re-runs everything.
        payload = {n: to_dict(self.section(n), identity_only=True) for n in names}
        payload["run.seed"] = self.run.seed
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# --------------------------------------------------------------------------- loading


def _plugin_sections(stages: Any) -> dict[str, Any]:
    """Config sections of stages that are not built into `PipelineConfig`."""
    if stages is None:
        from phi1.registry import all_stages

        stages = all_stages()
    builtin = _hints(PipelineConfig)
    out = {}
    for spec in stages:
        if spec.section_name not in builtin:
            if spec.config_class is None:
                raise ConfigError(f"stage {spec.name!r} has no config section: give its StageSpec a config_class")
            out[spec.section_name] = spec.config_class
    return out


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (),
                stages: Any = None) -> PipelineConfig:
    """Read a TOML config, apply ``key.path=value`` overrides, validate, build.

    ``stages``: the stage registry (default: `phi1.registry.all_stages()`); the
    sections of stages outside phi1 are validated like the built-in ones.
    """
    data: dict[str, Any] = {}
    source = "<defaults>"
    text = ""
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        if p.is_dir():
            raise ConfigError(f"config path is a directory, not a TOML file: {p}")
        if not p.is_file():  # /dev/zero, a FIFO: reading would never end
            raise ConfigError(f"config path is not a regular file: {p}")
        if p.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{p} is not a config: {p.stat().st_size:,} bytes (a config is at most "
                              f"{MAX_CONFIG_BYTES >> 20} MiB)")
        try:
            raw = p.read_bytes()
            text = raw.decode("utf-8-sig")  # a byte order mark (Windows editors) is not a syntax error
        except UnicodeDecodeError:
            raise ConfigError(f"{p} is not a config: not UTF-8 text (expected a TOML file)") from None
        except OSError as e:
            raise ConfigError(f"cannot read config {p}: {e.strerror or e}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p} is not a valid TOML config: {e}") from None
        except RecursionError:
            raise ConfigError(f"{p} is not a config: values nested too deeply") from None
        if not data:
            raise ConfigError(f"{p} is not a config: it defines no sections")
    plugins = _plugin_sections(stages)
    base = copy.deepcopy(data)
    for item in overrides:
        _apply_override(data, item, plugins)
    try:
        cfg = _build(data, plugins)
    except ConfigError as e:
        culprit = _blame(base, overrides, plugins)
        if not culprit and path is not None:
            line = _line_of(text, e.key)
            culprit = f"{source}:{line}" if line else source
        raise ConfigError(f"{culprit or source}: {e}") from None
    cfg.source = source
    cfg.source_text = text if path is not None else ""
    cfg.overrides = list(overrides)
    return cfg


_BARE_OR_QUOTED = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'


def _key_parts(key: str) -> list[str]:
    """``a."b.c"[2].d`` -> ``["a", "b.c", "2", "d"]`` (quotes dropped, indices as parts)."""
    import re

    parts = []
    for m in re.finditer(r'"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|\[(\d+)\]|([A-Za-z0-9_-]+)', key):
        parts.append(next(g for g in m.groups() if g is not None))
    return parts


def _line_of(text: str, key: str) -> int:
    """The line of ``key`` (a dotted path) in TOML ``text``: where it is set, else
    the line that sets the table holding it, else its section header; 0 = not found.
    Best effort, for the error line (tomllib keeps no positions)."""
    import re

    if not key:
        return 0
    target = _key_parts(key)
    header: list[str] = []
    arrays: dict[tuple[str, ...], int] = {}
    best, best_len = 0, 0
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        m = re.match(r"^\[\[\s*(.+?)\s*\]\]", s) or re.match(r"^\[\s*(.+?)\s*\]", s)
        if m and not re.match(rf"^{_BARE_OR_QUOTED}(\s*\.\s*{_BARE_OR_QUOTED})*\s*=", s):
            header = _key_parts(m.group(1))
            if s.startswith("[["):  # an array of tables: the n-th header is element n
                i = arrays.get(tuple(header), -1) + 1
                arrays[tuple(header)] = i
                header = [*header, str(i)]
            path = header
        else:
            m = re.match(rf"^({_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*)\s*=", s)
            if not m:
                continue
            path = header + _key_parts(m.group(1))
        if path == target:
            return n
        if len(path) > best_len and target[:len(path)] == path:
            best, best_len = n, len(path)
    return best


def _build(data: dict[str, Any], plugins: dict[str, Any]) -> PipelineConfig:
    data = dict(data)
    plugin_data = {name: data.pop(name) for name in list(data) if name in plugins}
    _check_moved(data)
    cfg = from_dict(PipelineConfig, data, where="", extra=plugins)
    cfg.plugins = {name: from_dict(cls, plugin_data.get(name, {}), where=name) for name, cls in plugins.items()}
    return cfg


def _blame(base: dict[str, Any], overrides: list[str] | tuple[str, ...], plugins: dict[str, Any]) -> str:
    """Which ``--set`` made a valid file invalid ("" = the file itself is invalid):
    the error line then names the override, not a file that holds no such value."""
    data = copy.deepcopy(base)
    try:
        _build(data, plugins)
    except ConfigError:
        return ""
    for item in overrides:
        _apply_override(data, item, plugins)
        try:
            _build(data, plugins)
        except ConfigError:
            return f"--set {item.partition('=')[0].strip()}"
    return ""


MAX_CONFIG_BYTES = 16 << 20

# Keys that moved: a config that still sets them gets told where they went.
MOVED = {
    "tokenize.validation_fraction": "run.validation_fraction",
    "mine.validation_fraction": "run.validation_fraction",
}


def _check_moved(data: dict[str, Any]) -> None:
    for old, new in MOVED.items():
        section, _, key = old.partition(".")
        if isinstance(data.get(section), dict) and key in data[section]:
            raise ConfigError(f"{old} has moved to {new} (one setting for every stage that uses it)")


def _apply_override(data: dict[str, Any], item: str, plugins: dict[str, Any] | None = None) -> None:
    if "=" not in item:
        raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
    key, _, raw = item.partition("=")
    key = key.strip()
    parts = _split_key(key)
    # Validate the path against the schema so a typo is caught with a suggestion.
    cls: Any = PipelineConfig
    if key in MOVED:
        raise ConfigError(f"--set {key}: {key} has moved to {MOVED[key]}")
    for i, part in enumerate(parts):
        hints = _hints(cls)
        if cls is PipelineConfig:
            hints = {**hints, **(plugins or {})}
        if part not in hints:
            where = ".".join(parts[:i]) or "<top level>"
            raise ConfigError(f"--set {key}: unknown key {part!r} in [{where}]{_suggest(part, hints)}")
        cls = _unwrap_optional(hints[part])
        if i < len(parts) - 1 and not dataclasses.is_dataclass(cls):
            if get_origin(cls) is dict:
                break
            raise ConfigError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a section")
    value = _parse_override_value(raw.strip(), key)
    if cls is str and isinstance(value, (bool, int, float, datetime.date, datetime.time)):
        value = raw.strip()  # a string key takes the word as typed: --set run.name=true, run.name=2024-01-01
    node = data
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {key}: {part} is not a table in the config file")
        node = nxt
    node[parts[-1]] = value


def _split_key(key: str) -> list[str]:
    """A dotted TOML key as its parts; quoted parts keep their dots
    (``tokenize.inputs."synth.textbooks"`` is three parts)."""
    if not key:
        raise ConfigError("--set: bad key ''")
    if not any(q in key for q in "\"'"):
        # plain names: split on dots, so a name TOML would not take (prétrain) gets "unknown key" + a suggestion
        parts = [p.strip() for p in key.split(".")]
        if any(not p for p in parts):
            raise ConfigError(f"--set: bad key {key!r}")
        return parts
    try:
        node: Any = tomllib.loads(f"{key} = 0")
    except tomllib.TOMLDecodeError:
        raise ConfigError(f"--set: bad key {key!r} (parts are names joined by dots; quote a part "
                          f"that holds a dot: tokenize.inputs.\"synth.textbooks\"=1)") from None
    parts = []
    while isinstance(node, dict):
        (name, node), = node.items()
        parts.append(name)
    return parts


def _parse_override_value(raw: str, key: str = "") -> Any:
    """Parse VALUE as a TOML value; bare words are strings (``--set run.name=try1``).
    A value that starts like a TOML string, list or table must be one: a
    malformed ``[1, 2`` is an error, not the string "[1, 2"."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except RecursionError:
        raise ConfigError(f"--set {key}: the value is nested too deeply") from None
    except tomllib.TOMLDecodeError as e:
        if raw[:1] in ("[", "{", '"', "'"):
            why = str(e).split(" (at line")[0]
            raise ConfigError(f"--set {key}: {_short(raw)} is not a valid TOML value ({why})") from None
        return raw


def _hints(cls: Any) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(cls)
        if f.init and not f.metadata.get("internal")
    }


def _suggest(name: str, candidates: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unwrap_optional(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def from_dict(cls: Any, data: Any, where: str, extra: dict[str, Any] | None = None) -> Any:
    """Build dataclass ``cls`` from a TOML table, validating every key."""
    label = f"[{where}]" if where else "the config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a table, got {type(data).__name__}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{where}.{key}" if where else key
        try:
            if key not in hints:
                if not where:
                    known = [*hints, *(extra or {})]
                    raise ConfigError(
                        f"unknown section [{key}]{_suggest(key, known)}; a phi1 config has sections: "
                        + ", ".join(known)
                    )
                raise ConfigError(f"unknown key {key!r} in {label}{_suggest(key, hints)}")
            kwargs[key] = _coerce(hints[key], value, dotted)
            _check_range(fields[key], kwargs[key], dotted)
        except ConfigError as e:
            e.key = e.key or dotted  # the innermost key wins (ingest.sources[1].kind, not ingest.sources)
            raise
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        err = ConfigError(f"{label}: {e}")
        err.key = where
        raise err from None


def _check_range(f: dataclasses.Field, value: Any, dotted: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    m = f.metadata
    for op, ok, word in (
        ("ge", lambda v, b: v >= b, ">="),
        ("gt", lambda v, b: v > b, ">"),
        ("le", lambda v, b: v <= b, "<="),
        ("lt", lambda v, b: v < b, "<"),
    ):
        bound = m.get(op)
        if bound is not None and not ok(value, bound):
            raise ConfigError(f"{dotted} = {_short(value)} is out of range: must be {word} {bound}")


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, dotted: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, dotted)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{dotted}: {_short(value)} does not match {tp}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{dotted} = {_short(value)} is not one of {', '.join(map(repr, choices))}{hint}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, dotted)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{dotted} must be a list, got {type(value).__name__} {_short(value)}")
        (item_tp, *_rest) = get_args(tp) or (Any,)
        return [_coerce(item_tp, v, f"{dotted}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _k, v_tp = get_args(tp) or (str, Any)
        if v_tp is float and isinstance(value, str):  # a mixture: one dataset alone
            value = {value: 1.0} if value else {}
        elif v_tp is float and isinstance(value, list) and all(isinstance(v, str) for v in value):
            twice = sorted({v for v in value if value.count(v) > 1})
            if twice:
                raise ConfigError(f"{dotted} names {', '.join(map(repr, twice))} more than once: list each "
                                  "dataset once (or give a table of weights)")
            value = {v: 1.0 for v in value}  # a mixture: weight 1 each
        if not isinstance(value, dict):
            raise ConfigError(f"{dotted} must be a table, got {type(value).__name__} {_short(value)}")
        return {str(k): _coerce(v_tp, v, f"{dotted}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if not -INT_LIMIT <= value < INT_LIMIT:
                raise ConfigError(f"{dotted} = {value} is too large: an integer option must fit in 64 bits")
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{dotted} = {_short(value)}: must be a finite number")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            if "\x00" in value:
                raise ConfigError(f"{dotted} = {_short(value)} contains a NUL character")
            return value
    else:  # pragma: no cover - schema error, not user error
        raise ConfigError(f"{dotted}: unsupported field type {tp}")
    raise ConfigError(f"{dotted} must be {_type_name(tp)}, got {type(value).__name__} {_short(value)}")


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters: an error stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


INT_LIMIT = 2**63  # what torch, numpy and the manifests' JSON readers take


def to_dict(obj: Any, identity_only: bool = False) -> Any:
    """A section as plain data (for hashing, manifests and `phi1 stages`).

    ``identity_only``: leave out execution fields (`option(execution=True)`),
    as the stage identity hash does.
    """
    if dataclasses.is_dataclass(obj):
        return {
            f.name: to_dict(getattr(obj, f.name), identity_only)
            for f in dataclasses.fields(obj)
            if not f.metadata.get("internal") and not (identity_only and f.metadata.get("execution"))
        }
    if isinstance(obj, (list, tuple)):
        return [to_dict(v, identity_only) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v, identity_only) for k, v in obj.items()}
    return obj


def execution_fields(cls: Any, prefix: str = "") -> list[str]:
    """Dotted names of the execution fields of a section class (for docs and tests)."""
    out = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        name = f"{prefix}{f.name}"
        if f.metadata.get("execution"):
            out.append(name)
        elif dataclasses.is_dataclass(_unwrap_optional(hints[f.name])):
            out.extend(execution_fields(_unwrap_optional(hints[f.name]), name + "."))
    return out
