"""The seed space: packaged data files, their errors, seeded sampling without repeats."""

from __future__ import annotations

import shutil

import pytest

from phi1.errors import InputError
from phi1.synth.permute import Permutation
from phi1.synth.seeds import DATA_DIR, FILES, SeedSampler, SeedSpace, parse_concepts


@pytest.fixture(scope="module")
def space() -> SeedSpace:
    return SeedSpace.load()


def test_packaged_space_is_large_and_consistent(space):
    s = space.sizes()
    assert s["concepts"] >= 400 and s["exercise_concepts"] >= 350  # several hundred leaves
    assert s["areas"] >= 20 and s["topics"] >= 80
    assert s["audiences"] >= 40 and s["styles"] >= 8 and s["difficulties"] >= 3 and s["scenarios"] >= 40
    assert s["function_names"] > 300_000  # the paper's ~880K exercises: names repeat ~2-3 times at most
    assert s["textbook_combinations"] > 10_000_000 and s["exercise_combinations"] > 1_000_000_000
    names = space.function_names()
    assert all(n.isidentifier() and n == n.lower() for n in names)
    # every textbook-only leaf is left out of exercises, nothing else
    assert len(space.exercise_concepts) == sum(not c.textbook_only for c in space.concepts)
    assert not any(c.textbook_only for c in space.exercise_concepts)
    assert set(space.files) == set(FILES) and len(space.fingerprint) == 16


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 100, 1000, 4096, 4097, 65537])
def test_permutation_is_a_bijection(n):
    p = Permutation(n, f"key-{n}")
    assert sorted(p(i) for i in range(n)) == list(range(n))
    with pytest.raises(IndexError):
        p(n)


def test_permutation_depends_on_key_only():
    a = [Permutation(10_000, "a")(i) for i in range(50)]
    assert a == [Permutation(10_000, "a")(i) for i in range(50)]
    assert a != [Permutation(10_000, "b")(i) for i in range(50)]
    assert a != list(range(50))  # not the identity on a prefix


def test_seeds_never_repeat_and_are_computed_alone(space):
    s = SeedSampler(space, "exercises", seed=3)
    seeds = s.seeds(0, 3000)
    combos = {(x.concept, x.scenario.name, x.object, x.verb, x.returns, x.qualifier, x.arity, x.difficulty.name)
              for x in seeds}
    assert len(combos) == 3000
    # the 2000th seed is the same whether drawn in sequence or alone, in any sampler
    assert SeedSampler(space, "exercises", seed=3)[2000] == seeds[2000]
    assert SeedSampler(space, "exercises", seed=4)[2000] != seeds[2000]
    t = SeedSampler(space, "textbooks", seed=3).seeds(0, 2000)
    assert len({(x.concept, x.audience, x.style, x.difficulty, x.scenario) for x in t}) == 2000
    # exercises come from exercise leaves only; names are built from the seed's parts
    assert all(not x.concept.textbook_only for x in seeds)
    assert all(x.name.startswith(f"{x.verb}_{x.object}") for x in seeds)


def test_every_combination_once_in_a_tiny_space(tmp_path):
    (tmp_path / "concepts.txt").write_text("A\n  T\n    one\n    two\n")
    (tmp_path / "audiences.txt").write_text("x\ny\n")
    (tmp_path / "styles.txt").write_text("s: style s\n")
    (tmp_path / "difficulties.txt").write_text("easy: e\nhard: h\n")
    (tmp_path / "scenarios.toml").write_text('[[scenario]]\nname = "shop"\nobjects = ["items"]\n')
    sp = SeedSpace.load(tmp_path)
    s = SeedSampler(sp, "textbooks", 0)
    assert s.size == 2 * 2 * 1 * 2 * 1
    got = {(x.concept.leaf, x.audience, x.difficulty.name) for x in s.seeds(0, s.size)}
    assert len(got) == s.size
    with pytest.raises(InputError, match=r"synth.textbooks = 9 is more than the seed space holds \(8 distinct"):
        s.check(9, "synth.textbooks")


def test_a_custom_folder_replaces_files_by_name(tmp_path, space):
    (tmp_path / "audiences.txt").write_text("# two readers\na nurse\na pilot\n")
    custom = SeedSpace.load(tmp_path)
    assert custom.audiences == ["a nurse", "a pilot"]
    assert custom.concepts == space.concepts  # the rest is packaged
    assert custom.files["audiences.txt"] == str(tmp_path / "audiences.txt")
    assert custom.files["concepts.txt"] == str(DATA_DIR / "concepts.txt")
    assert custom.fingerprint != space.fingerprint


@pytest.mark.parametrize("name,text,message", [
    ("concepts.txt", "A\n   T\n", r"concepts.txt:2: indentation must be 0, 2 or 4 spaces"),
    ("concepts.txt", "A\n    leaf\n", r"concepts.txt:2: leaf 'leaf' comes before any topic"),
    ("concepts.txt", "A\n  T\n    x\n    x\n", r"concepts.txt:4: duplicate leaf 'x' \(first on line 3\)"),
    ("concepts.txt", "A\n\tT\n", r"concepts.txt:2: indent with two spaces, not tabs"),
    ("concepts.txt", "A\n  T\n    only @textbook\n", r"every leaf is marked @textbook"),
    ("audiences.txt", "# nothing\n", r"audiences.txt: no entries"),
    ("styles.txt", "plain line without a colon\n", r"styles.txt:1: expected 'name: description'"),
    ("difficulties.txt", "a: x\na: y\n", r"difficulties.txt:2: duplicate name 'a'"),
    ("scenarios.toml", "[[scenario]]\nname = 'x'\nobjects = ['Bad Name']\n", r"'Bad Name' is not a snake_case"),
    ("scenarios.toml", "[[scenario]\n", r"scenarios.toml: not valid TOML"),
    ("names.toml", "arities = [1]\n[[verb]]\nverb = 'count'\nreturns = []\n", r"returns must be a non-empty"),
    ("names.toml", "arities = [1, 1]\n[[verb]]\nverb = 'count'\nreturns = ['int']\n", r"arities must be"),
    ("names.toml", "colour = 1\n", r"unknown key 'colour'"),
])
def test_bad_seed_files_are_one_line_errors_naming_file_and_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError, match=message):
        SeedSpace.load(tmp_path)


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(InputError, match="synth.seed_space: folder not found"):
        SeedSpace.load(tmp_path / "nope")


def test_seed_files_ship_as_package_data(tmp_path, repo_root):
    import fnmatch
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    patterns = tomllib.loads((repo_root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["phi1"]
    for name in FILES:
        assert any(fnmatch.fnmatch(f"synth/data/{name}", p) for p in patterns), name
        shutil.copy(DATA_DIR / name, tmp_path / name)
    # a copy of the packaged files is a valid custom space with the same identity
    assert SeedSpace.load(tmp_path).fingerprint == SeedSpace.load().fingerprint
    leaves = parse_concepts((DATA_DIR / "concepts.txt").read_text(), "concepts.txt")
    assert len({c.path for c in leaves}) == len(leaves)


def test_requested_coverage_on_arrays_equals_counting_seed_by_seed():
    from phi1.config import load_config
    from phi1.synth.plan import make_plans, requested_coverage
    from phi1.synth.report import Coverage

    cfg = load_config(None, ["synth.textbooks=2500", "synth.exercises=3000", "run.seed=7"])
    for plan in make_plans(cfg.section("synth"), SeedSpace.load(), cfg.run.seed):
        names = len(plan.sampler.space.function_names()) if plan.kind == "exercises" else None
        slow = Coverage(plan.dims(), plan.pair, names)
        for i in range(plan.count):
            slow.add(plan.seed(i).to_json())
        assert requested_coverage(plan) == slow.result()


def test_many_indices_at_once_equal_one_by_one():
    import numpy as np

    for n in (1, 3, 1000, 5_139_763_200):
        p = Permutation(n, "k")
        m = min(n, 2000)
        assert p.many(np.arange(m)).tolist() == [p(i) for i in range(m)]
