"""The seed space of synthetic data, and seeds drawn from it without repeats.

The paper made its synthetic data diverse by constraining what the model is
asked for: topics and target audiences for textbooks, function names for
exercises. The seed space is a set of data files shipped in
``phi1/synth/data/`` (a folder given as ``synth.seed_space`` replaces any of
them by name):

* ``concepts.txt``     a tree area > topic > leaf of Python concepts and
                       algorithmic skills (leaves marked ``@textbook`` are
                       never asked for as exercises);
* ``audiences.txt``    readers and professions, one per line;
* ``styles.txt``       ``name: instruction`` ways to write a section;
* ``difficulties.txt`` ``name: description`` levels;
* ``scenarios.toml``   settings, each with snake_case objects;
* ``names.toml``       verbs (with the return types that go with them),
                       qualifiers and arities: the function-name and
                       signature generator (``<verb>_<object>[_<qualifier>]``).

A textbook seed is one combination (leaf, audience, style, difficulty,
scenario); an exercise seed is (exercise leaf, scenario object, verb and
return type, qualifier, arity, difficulty). The ``i``-th seed of a kind is
combination ``Permutation(size, key)(i)`` of the mixed-radix product of those
lists (`phi1.synth.permute`): no combination is drawn twice, and any seed is
computed on its own.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from phi1.errors import InputError
from phi1.synth.permute import Permutation

if TYPE_CHECKING:  # numpy only where it is used: the registry imports this module
    import numpy as np

DATA_DIR = Path(__file__).with_name("data")
FILES = ("concepts.txt", "audiences.txt", "styles.txt", "difficulties.txt", "scenarios.toml", "names.toml")
TEXTBOOK_ONLY = "@textbook"
_IDENT_PART = re.compile(r"^[a-z][a-z0-9_]*$")
_INDENT = "  "


@dataclass(frozen=True)
class Concept:
    area: str
    topic: str
    leaf: str
    textbook_only: bool = False

    @property
    def path(self) -> str:
        return f"{self.area} > {self.topic} > {self.leaf}"


@dataclass(frozen=True)
class Named:
    """A style or difficulty: a short name (recorded) and the text the prompt quotes."""

    name: str
    text: str


@dataclass(frozen=True)
class Scenario:
    name: str
    objects: tuple[str, ...]


@dataclass(frozen=True)
class Verb:
    verb: str
    returns: tuple[str, ...]


# --------------------------------------------------------------------------- loading


def _read(folder: Path | None, name: str) -> tuple[Path, str]:
    path = folder / name if folder is not None and (folder / name).is_file() else DATA_DIR / name
    try:
        return path, path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"seed-space file not found: {path}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None


def _lines(text: str) -> list[tuple[int, str]]:
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if line.strip() and not line.lstrip().startswith("#"):
            out.append((n, line))
    return out


def parse_concepts(text: str, where: str) -> list[Concept]:
    """The leaves of an indented area > topic > leaf outline."""
    concepts: list[Concept] = []
    area = topic = ""
    seen: dict[tuple[str, str, str], int] = {}
    for n, line in _lines(text):
        if "\t" in line:
            raise InputError(f"{where}:{n}: indent with two spaces, not tabs")
        body = line.lstrip(" ")
        indent = len(line) - len(body)
        if indent % len(_INDENT) or indent // len(_INDENT) > 2:
            raise InputError(f"{where}:{n}: indentation must be 0, 2 or 4 spaces (area, topic, leaf), "
                             f"got {indent}")
        depth = indent // len(_INDENT)
        if depth == 0:
            area, topic = body, ""
        elif depth == 1:
            if not area:
                raise InputError(f"{where}:{n}: topic {body!r} comes before any area")
            topic = body
        else:
            if not topic:
                raise InputError(f"{where}:{n}: leaf {body!r} comes before any topic of its area")
            textbook_only = body.endswith(TEXTBOOK_ONLY)
            leaf = body[: -len(TEXTBOOK_ONLY)].strip() if textbook_only else body
            if not leaf:
                raise InputError(f"{where}:{n}: empty leaf")
            key = (area, topic, leaf)
            if key in seen:
                raise InputError(f"{where}:{n}: duplicate leaf {leaf!r} (first on line {seen[key]})")
            seen[key] = n
            concepts.append(Concept(area, topic, leaf, textbook_only))
    if not concepts:
        raise InputError(f"{where}: no leaves (an area line, a topic line indented 2 spaces, "
                         "leaves indented 4 spaces)")
    return concepts


def parse_list(text: str, where: str) -> list[str]:
    items: list[str] = []
    seen: dict[str, int] = {}
    for n, line in _lines(text):
        item = line.strip()
        if item in seen:
            raise InputError(f"{where}:{n}: duplicate entry {item!r} (first on line {seen[item]})")
        seen[item] = n
        items.append(item)
    if not items:
        raise InputError(f"{where}: no entries (one per line)")
    return items


def parse_named(text: str, where: str) -> list[Named]:
    out: list[Named] = []
    seen: dict[str, int] = {}
    for n, line in _lines(text):
        name, sep, desc = line.strip().partition(":")
        name, desc = name.strip(), desc.strip()
        if not sep or not name or not desc:
            raise InputError(f"{where}:{n}: expected 'name: description', got {line.strip()!r}")
        if name in seen:
            raise InputError(f"{where}:{n}: duplicate name {name!r} (first on line {seen[name]})")
        seen[name] = n
        out.append(Named(name, desc))
    if not out:
        raise InputError(f"{where}: no entries ('name: description', one per line)")
    return out


def _toml(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{where}: not valid TOML: {e}") from None


def _strings(value: Any, where: str, allow_empty_items: bool = False) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InputError(f"{where} must be a non-empty list of strings")
    if not allow_empty_items and any(not v.strip() for v in value):
        raise InputError(f"{where} holds an empty string")
    if len(set(value)) != len(value):
        dup = next(v for v in value if value.count(v) > 1)
        raise InputError(f"{where} lists {dup!r} twice")
    return list(value)


def _name_part(value: str, where: str) -> str:
    if not _IDENT_PART.match(value):
        raise InputError(f"{where}: {value!r} is not a snake_case name part (a-z, 0-9, _; starting with a letter)")
    return value


def parse_scenarios(text: str, where: str) -> list[Scenario]:
    data = _toml(text, where)
    items = data.get("scenario")
    if not isinstance(items, list) or not items:
        raise InputError(f"{where}: no [[scenario]] tables")
    out, seen = [], set()
    for i, item in enumerate(items):
        at = f"{where}: scenario {i + 1}"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].strip():
            raise InputError(f"{at}: needs a 'name' string")
        unknown = set(item) - {"name", "objects"}
        if unknown:
            raise InputError(f"{at} ({item['name']!r}): unknown key {sorted(unknown)[0]!r} (keys: name, objects)")
        if item["name"] in seen:
            raise InputError(f"{at}: duplicate scenario {item['name']!r}")
        seen.add(item["name"])
        objects = [_name_part(o, f"{at} ({item['name']!r}).objects")
                   for o in _strings(item.get("objects"), f"{at} ({item['name']!r}).objects")]
        out.append(Scenario(item["name"], tuple(objects)))
    return out


def parse_names(text: str, where: str) -> tuple[list[Verb], list[str], list[int]]:
    data = _toml(text, where)
    unknown = set(data) - {"verb", "qualifiers", "arities"}
    if unknown:
        raise InputError(f"{where}: unknown key {sorted(unknown)[0]!r} (keys: verb, qualifiers, arities)")
    verbs_raw = data.get("verb")
    if not isinstance(verbs_raw, list) or not verbs_raw:
        raise InputError(f"{where}: no [[verb]] tables")
    verbs, seen = [], set()
    for i, item in enumerate(verbs_raw):
        at = f"{where}: verb {i + 1}"
        if not isinstance(item, dict) or not isinstance(item.get("verb"), str):
            raise InputError(f"{at}: needs a 'verb' string")
        name = _name_part(item["verb"], f"{at}.verb")
        if name in seen:
            raise InputError(f"{at}: duplicate verb {name!r}")
        seen.add(name)
        verbs.append(Verb(name, tuple(_strings(item.get("returns"), f"{at} ({name!r}).returns"))))
    qualifiers = _strings(data.get("qualifiers", [""]), f"{where}: qualifiers", allow_empty_items=True)
    for q in qualifiers:
        if q:
            _name_part(q, f"{where}: qualifiers")
    arities = data.get("arities", [1, 2, 3])
    if (not isinstance(arities, list) or not arities
            or not all(isinstance(a, int) and not isinstance(a, bool) and 0 <= a <= 8 for a in arities)
            or len(set(arities)) != len(arities)):
        raise InputError(f"{where}: arities must be a list of distinct integers 0..8, got {arities!r}")
    return verbs, qualifiers, list(arities)


@dataclass
class SeedSpace:
    """Everything seeds are drawn from, loaded and checked."""

    concepts: list[Concept]
    audiences: list[str]
    styles: list[Named]
    difficulties: list[Named]
    scenarios: list[Scenario]
    verbs: list[Verb]
    qualifiers: list[str]
    arities: list[int]
    files: dict[str, str] = field(default_factory=dict)  # file name -> path it came from
    fingerprint: str = ""
    _names: set[str] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def load(cls, folder: str | Path | None = None) -> "SeedSpace":
        """The packaged seed space, with any file of ``folder`` replacing the packaged one."""
        root = Path(folder).expanduser() if folder else None
        if root is not None and not root.is_dir():
            raise InputError(f"synth.seed_space: folder not found: {root}")
        texts: dict[str, tuple[Path, str]] = {name: _read(root, name) for name in FILES}
        h = hashlib.sha256()
        for name in FILES:
            h.update(f"{name}\0{texts[name][1]}\0".encode())

        def where(name: str) -> str:
            return str(texts[name][0])

        verbs, qualifiers, arities = parse_names(texts["names.toml"][1], where("names.toml"))
        space = cls(
            concepts=parse_concepts(texts["concepts.txt"][1], where("concepts.txt")),
            audiences=parse_list(texts["audiences.txt"][1], where("audiences.txt")),
            styles=parse_named(texts["styles.txt"][1], where("styles.txt")),
            difficulties=parse_named(texts["difficulties.txt"][1], where("difficulties.txt")),
            scenarios=parse_scenarios(texts["scenarios.toml"][1], where("scenarios.toml")),
            verbs=verbs, qualifiers=qualifiers, arities=arities,
            files={name: str(p) for name, (p, _) in texts.items()},
            fingerprint=h.hexdigest()[:16],
        )
        if not space.exercise_concepts:
            raise InputError(f"{where('concepts.txt')}: every leaf is marked {TEXTBOOK_ONLY}: none is left "
                             "for exercises")
        return space

    # ------------------------------------------------------------------ derived lists

    @property
    def exercise_concepts(self) -> list[Concept]:
        return [c for c in self.concepts if not c.textbook_only]

    @property
    def scenario_objects(self) -> list[tuple[Scenario, str]]:
        return [(s, o) for s in self.scenarios for o in s.objects]

    @property
    def verb_returns(self) -> list[tuple[Verb, str]]:
        return [(v, r) for v in self.verbs for r in v.returns]

    def textbook_dims(self) -> list[Sequence[Any]]:
        return [self.concepts, self.audiences, self.styles, self.difficulties, self.scenarios]

    def exercise_dims(self) -> list[Sequence[Any]]:
        return [self.exercise_concepts, self.scenario_objects, self.verb_returns, self.qualifiers,
                self.arities, self.difficulties]

    def function_names(self) -> set[str]:
        """Every function name the generator can produce (computed once)."""
        if self._names is None:
            objects = {o for s in self.scenarios for o in s.objects}
            self._names = {function_name(v.verb, o, q) for v in self.verbs for o in objects for q in self.qualifiers}
        return self._names

    def sizes(self) -> dict[str, int]:
        return {
            "concepts": len(self.concepts),
            "exercise_concepts": len(self.exercise_concepts),
            "areas": len({c.area for c in self.concepts}),
            "topics": len({(c.area, c.topic) for c in self.concepts}),
            "audiences": len(self.audiences),
            "styles": len(self.styles),
            "difficulties": len(self.difficulties),
            "scenarios": len(self.scenarios),
            "scenario_objects": len(self.scenario_objects),
            "verbs": len(self.verbs),
            "verb_returns": len(self.verb_returns),
            "qualifiers": len(self.qualifiers),
            "arities": len(self.arities),
            "function_names": len(self.function_names()),
            "textbook_combinations": _product(self.textbook_dims()),
            "exercise_combinations": _product(self.exercise_dims()),
        }


def function_name(verb: str, obj: str, qualifier: str) -> str:
    return f"{verb}_{obj}" + (f"_{qualifier}" if qualifier else "")


def _product(dims: list[Sequence[Any]]) -> int:
    n = 1
    for d in dims:
        n *= len(d)
    return n


def _digits(code: int, dims: list[Sequence[Any]]) -> list[Any]:
    """Mixed-radix decoding of a combination number into one item per list."""
    out = []
    for d in reversed(dims):
        code, r = divmod(code, len(d))
        out.append(d[r])
    return out[::-1]


# --------------------------------------------------------------------------- seeds


@dataclass(frozen=True)
class TextbookSeed:
    index: int  # position in this run's sequence of textbook seeds
    concept: Concept
    audience: str
    style: Named
    difficulty: Named
    scenario: Scenario

    @property
    def pair(self) -> tuple[str, str]:
        """The (leaf, audience) pair this seed covers."""
        return (self.concept.path, self.audience)

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "concept": self.concept.path, "audience": self.audience,
                "style": self.style.name, "difficulty": self.difficulty.name, "scenario": self.scenario.name}


@dataclass(frozen=True)
class ExerciseSeed:
    index: int
    concept: Concept
    scenario: Scenario
    object: str
    verb: str
    returns: str
    qualifier: str
    arity: int
    difficulty: Named

    @property
    def name(self) -> str:
        """The function name the exercise must define."""
        return function_name(self.verb, self.object, self.qualifier)

    @property
    def pair(self) -> tuple[str, str]:
        """The (leaf, scenario) pair this seed covers."""
        return (self.concept.path, self.scenario.name)

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "concept": self.concept.path, "scenario": self.scenario.name,
                "name": self.name, "returns": self.returns, "arity": self.arity,
                "difficulty": self.difficulty.name}


class SeedSampler:
    """The seeds of one kind ("textbooks" or "exercises") for one run seed."""

    def __init__(self, space: SeedSpace, kind: str, seed: int):
        if kind not in ("textbooks", "exercises"):
            raise ValueError(f"unknown seed kind {kind!r}")
        self.space = space
        self.kind = kind
        self.dims = space.textbook_dims() if kind == "textbooks" else space.exercise_dims()
        self.size = _product(self.dims)
        self._perm = Permutation(self.size, f"phi1-synth:{kind}:{seed}")

    def check(self, count: int, key: str) -> None:
        if count > self.size:
            raise InputError(
                f"{key} = {count:,} is more than the seed space holds ({self.size:,} distinct {self.kind} "
                f"combinations): add leaves, audiences or scenarios to the seed space (synth.seed_space)")

    def __getitem__(self, index: int) -> TextbookSeed | ExerciseSeed:
        parts = _digits(self._perm(index), self.dims)
        if self.kind == "textbooks":
            concept, audience, style, difficulty, scenario = parts
            return TextbookSeed(index, concept, audience, style, difficulty, scenario)
        concept, (scenario, obj), (verb, returns), qualifier, arity, difficulty = parts
        return ExerciseSeed(index, concept, scenario, obj, verb.verb, returns, qualifier, arity, difficulty)

    def seeds(self, start: int, stop: int) -> list[Any]:
        return [self[i] for i in range(start, stop)]

    def digits(self, start: int, stop: int) -> list["np.ndarray"]:
        """For seeds ``start..stop-1`` at once: per seed dimension, the position
        of each seed's item in that dimension's list (numpy int64 arrays)."""
        import numpy as np

        code = self._perm.many(np.arange(start, stop, dtype=np.uint64)).astype(np.int64)
        out = []
        for d in reversed(self.dims):
            code, r = np.divmod(code, len(d))
            out.append(r)
        return out[::-1]


def fingerprint(config: Any) -> str:
    """Identity of the seed-space files a config uses (the stage's external input)."""
    folder = config.section("synth").seed_space
    root = Path(folder).expanduser() if folder else None
    h = hashlib.sha256()
    for name in FILES:
        path = root / name if root is not None and (root / name).is_file() else DATA_DIR / name
        try:
            h.update(f"{name}\0".encode() + path.read_bytes() + b"\0")
        except OSError:
            h.update(f"{name}\0missing\0".encode())
    return h.hexdigest()[:16]
