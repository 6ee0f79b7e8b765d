"""Finetuning data layouts: a weighted exercise mixture, packed into full rows
or one padded exercise per row, targets on every token or the solution only."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from phi1.errors import InputError
from phi1.train import exercises as ex
from phi1.train.data import Example, RowArrays
from phi1.train.distributed import DistEnv
from training_fixtures import exercise, make_mine, make_tokenizer

ENV = DistEnv(0, 1, 0, __import__("torch").device("cpu"))


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from tokenizers import Tokenizer

    folder = make_tokenizer(tmp_path_factory.mktemp("tok") / "tok")
    t = Tokenizer.from_file(str(folder / "tokenizer.json"))
    return t, t.token_to_id("<|endoftext|>")


@pytest.fixture
def two_sources(tmp_path):
    make_mine(tmp_path / "a", n_train=20, n_val=4)
    (tmp_path / "b").mkdir()
    with gzip.open(tmp_path / "b" / "train.jsonl.gz", "wt") as f:  # no val.jsonl.gz: allowed
        for i in range(10):
            f.write(json.dumps({**exercise(100 + i), "id": f"b-{i}"}) + "\n")
    return tmp_path


def test_mixture_weights_copies_in_passes(two_sources):
    a, b = ex.ExerciseSource("a", two_sources / "a", 2.0), ex.ExerciseSource("b", two_sources / "b", 0.5)
    ids = [r.id for r in ex.mixture_records([a, b], "train", seed=0)]
    a_ids = [f"ex-{i}" for i in range(20)]
    assert ids[:20] == a_ids  # pass 0: every first copy, in file order
    half = [i for i in ids[20:] if i.startswith("b-")]
    assert 0 < len(half) < 10 and len(set(half)) == len(half) and ids[20:20 + len(half)] == half  # b x0.5, once
    assert ids[20 + len(half):] == a_ids  # pass 1: a's second copies, never next to the first
    assert ids == [r.id for r in ex.mixture_records([a, b], "train", seed=0)]  # deterministic
    assert [r.id for r in ex.mixture_records([a, b], "val", seed=0)] == [f"ex-{i}" for i in range(1000, 1004)] * 2


def test_pack_examples_conserves_tokens_and_masks():
    rng = np.random.default_rng(0)
    exs = [Example(rng.integers(1, 100, n), rng.random(n) < 0.5) for n in rng.integers(3, 30, 40)]
    ids, mask, dropped = ex.pack_examples(exs, seq_len=16, seed=3, keep_mask=True)
    total = sum(len(e.ids) for e in exs)
    assert ids.shape == (total // 16, 16) and dropped == total % 16
    order = np.random.default_rng([3, 0x9ac4]).permutation(len(exs))
    flat_ids = np.concatenate([exs[i].ids for i in order])[: ids.size]
    flat_mask = np.concatenate([exs[i].mask for i in order])[: ids.size]
    assert ids.ravel().tolist() == flat_ids.tolist() and mask.ravel().tolist() == flat_mask.tolist()
    again, _, _ = ex.pack_examples(exs, seq_len=16, seed=3, keep_mask=False)
    assert again.tolist() == ids.tolist()
    assert ex.pack_examples(exs, seq_len=16, seed=4, keep_mask=False)[0].tolist() != ids.tolist()  # seeded order


def _prepare(tmp_path, sources, tok, **kw):
    t, eot = tok
    args = dict(layout="packed", loss_on="all", eot_id=eot, seq_len=64, seed=0, vocab_size=t.get_vocab_size(),
                env=ENV)
    args.update(kw)
    return ex.prepare_exercises(tmp_path / "work", sources, t, **args)


def test_packed_rows_are_full_and_every_token_counts(two_sources, tok):
    _, eot = tok
    src = [ex.ExerciseSource("a", two_sources / "a", 1.0)]
    data = _prepare(two_sources, src, tok)
    st = data.stats["train"]
    assert isinstance(data.train, RowArrays) and data.train.mask is None and data.train.uniform_targets
    assert st.examples == 20 and st.rows == len(data.train) == st.tokens // 64 and st.dropped_tokens == st.tokens % 64
    assert st.truncated == 0
    flat = data.train.ids.ravel()
    assert int((flat == eot).sum()) >= st.rows  # exercises end with <|endoftext|>, several per row
    # Validation: one exercise per row whatever the layout, every token a target (loss_on = all).
    assert len(data.val) == 4 and data.val.example(0).ids[-1] == eot and data.val.example(0).mask.all()


def test_packed_rows_keep_the_solution_mask(two_sources, tok):
    t, eot = tok
    src = [ex.ExerciseSource("a", two_sources / "a", 1.0)]
    data = _prepare(two_sources, src, tok, loss_on="solution")
    rows = data.train
    assert rows.mask is not None and not rows.uniform_targets  # ranks must count targets together
    assert 0 < rows.mask.mean() < 1
    # Every <|endoftext|> is a target (the model learns to stop); no prompt token of a row is one.
    assert rows.mask[rows.ids == eot].all()
    first_row = t.decode(rows.ids[0][rows.mask[0]].tolist())
    assert "return x + y" in first_row and "def " not in first_row


def test_padded_layout_is_one_exercise_per_row(two_sources, tok):
    src = [ex.ExerciseSource("a", two_sources / "a", 1.0), ex.ExerciseSource("b", two_sources / "b", 1.0)]
    data = _prepare(two_sources, src, tok, layout="padded", loss_on="all", seq_len=12)
    st = data.stats["train"]
    assert len(data.train) == st.examples == st.rows == 30 and st.truncated == 30  # heads cut to 12 tokens
    assert all(len(data.train.example(i).ids) == 12 for i in range(3))
    assert not data.train.uniform_targets
    # Solution targets cut away entirely: nothing to learn from such an exercise, it is left out.
    with pytest.raises(InputError, match="no usable training exercises"):
        _prepare(two_sources, src, tok, layout="padded", loss_on="solution", seq_len=12)


def test_prepared_data_is_reused_until_the_layout_changes(two_sources, tok, monkeypatch):
    src = [ex.ExerciseSource("a", two_sources / "a", 1.0)]
    first = _prepare(two_sources, src, tok)

    def boom(*_a, **_k):
        raise AssertionError("encoded again")

    monkeypatch.setattr(ex, "encode_records", boom)
    again = _prepare(two_sources, src, tok)  # an interrupted attempt resumes with the same data
    assert again.train.ids.tolist() == first.train.ids.tolist()
    with pytest.raises(AssertionError, match="encoded again"):
        _prepare(two_sources, src, tok, layout="padded")


def test_too_little_data_for_a_packed_row_says_what_to_do(two_sources, tok):
    src = [ex.ExerciseSource("a", two_sources / "a", 1.0)]
    with pytest.raises(InputError, match="fill no 4096-token row; use finetune.layout = 'padded'"):
        _prepare(two_sources, src, tok, seq_len=4096)
    with pytest.raises(InputError, match="no exercise dataset"):
        _prepare(two_sources, [], tok)
