"""Vocabulary and windowed datasets: layout, determinism, and bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from bench.harness import copy_repo, run, section, tool_env, write_params
from pipeline.errors import DataError
from pipeline.io import read_json
from pipeline.params import SPECIALS
from pipeline.shards import ShardWriter
from pipeline.tokenize import TOKENS_SCHEMA
from pipeline.vocab import EOS, PAD, UNK, Vocab, build_vocab, count_tokens, oov_metrics, write_vocab
from pipeline.windows import build, pad_rows, sentence_lengths, with_separators


def token_shards(folder: Path, docs: list[tuple[str, list[str]]], label: list[str] | None = None) -> Path:
    folder.mkdir(parents=True)
    schema = TOKENS_SCHEMA.append(pa.field("label", pa.string())) if label else TOKENS_SCHEMA
    cols = {"doc_id": list(range(len(docs))), "split": [s for s, _ in docs], "tokens": [t for _, t in docs]}
    if label:
        cols["label"] = label
    with ShardWriter(folder, schema, rows_per_shard=2) as w:
        w.write(pa.table(cols, schema=schema))
    return folder


DOCS = [
    ("train", ["b", "a", "c", "a"]),
    ("train", ["c", "b", "d", "."]),
    ("valid", ["a", "z", "."]),
    ("test", ["e", "a", "b", "c", ".", "a"]),
    ("train", ["a", "e", "x"]),
]


def test_vocab_order_ties_specials_and_oov(tmp_path: Path) -> None:
    counts, docs = count_tokens(token_shards(tmp_path / "t", DOCS))
    vocab = build_vocab("word", counts["train"], max_size=7, min_count=1, train_docs=docs["train"])
    # a:3; b:2, c:2 (tie -> alphabetical); then ".", d, e, x at 1: room for two of them.
    assert vocab.tokens == (*SPECIALS, "a", "b", "c", ".")
    assert vocab.counts == (0, 3, 3, 3, 2, 2, 1)  # <unk> counts the train tokens left out: d, e, x
    m = oov_metrics(vocab, counts, docs)
    assert m["splits"]["valid"] == {"docs": 1, "tokens": 3, "types": 3, "oov_tokens": 1, "oov_rate": 1 / 3}
    assert m["splits"]["train"]["oov_rate"] == 3 / 11
    min2 = build_vocab("word", counts["train"], max_size=100, min_count=2, train_docs=3)
    assert min2.tokens == (*SPECIALS, "a", "b", "c")


def test_vocab_round_trip_and_lookup(tmp_path: Path) -> None:
    v = Vocab("char", (*SPECIALS, "x", "y"), (0, 0, 1, 5, 4))
    v.save(tmp_path / "v.json")
    w = Vocab.load(tmp_path / "v.json")
    assert w == v and w.sha256 == v.sha256
    assert w.encode(["y", "q"]) == [4, UNK] and w.decode([4, EOS]) == ["y", "<eos>"]
    with pytest.raises(DataError, match="vocabulary not found; run `dvc repro`"):
        Vocab.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text(json.dumps({"level": "w", "tokens": ["a", "b", "c"], "counts": [1, 1, 1]}))
    with pytest.raises(DataError, match="must start with"):
        Vocab.load(tmp_path / "bad.json")


def test_separators_and_padding_kernels() -> None:
    ids = np.array([5, 6, 7, 8, 9, 10], np.uint16)
    assert with_separators(ids, np.array([2, 0, 4]), EOS).tolist() == [5, 6, 2, 2, 7, 8, 9, 10, 2]
    rows, kept = pad_rows(ids, np.array([2, 0, 4]), max_length=4, dtype=np.dtype(np.uint16))
    assert rows.tolist() == [[5, 6, 2, 0], [2, 0, 0, 0], [7, 8, 9, 10]]  # the last is truncated: no room for <eos>
    assert kept.tolist() == [3, 1, 4]
    lengths, owner = sentence_lengths(np.array([5, 3, 6, 3, 7, 8, 3]), np.array([4, 3]), np.array([3]))
    assert lengths.tolist() == [2, 2, 3] and owner.tolist() == [0, 0, 1]  # "5 3", "6 3" | "7 8 3"


def test_windows_layout(tmp_path: Path) -> None:
    tokens = token_shards(tmp_path / "t", DOCS, label=["neg", "pos", "pos", "neg", "pos"])
    counts, docs = count_tokens(tokens)
    vocab = build_vocab("word", counts["train"], 100, 1, docs["train"])
    cfg = section("windows.word", length=4, stride=3, max_length=4, unit="document")
    meta = build("word", cfg, tokens, vocab, tmp_path / "w")
    enc = vocab.encode
    train = tmp_path / "w" / "train"
    stream = np.load(train / "stream.npy")
    expect = [EOS, *enc(DOCS[0][1]), EOS, *enc(DOCS[1][1]), EOS, *enc(DOCS[4][1]), EOS]
    assert stream.dtype == np.uint16 and stream.tolist() == expect
    windows = np.load(train / "windows.npy")
    assert windows.shape == ((len(expect) - 5) // 3 + 1, 5)
    assert windows[1].tolist() == expect[3:8]  # inputs w[:-1], targets w[1:]
    padded, lengths = np.load(train / "padded.npy"), np.load(train / "lengths.npy")
    assert padded.tolist()[2] == [*enc(["a", "e", "x"]), EOS] and lengths.tolist() == [4, 4, 4]
    assert np.load(train / "doc_ids.npy").tolist() == [0, 1, 4]
    assert meta["labels"] == ["neg", "pos"] and np.load(train / "labels.npy").tolist() == [0, 1, 1]
    assert meta["splits"]["train"] == {
        "docs": 3,
        "stream_tokens": 15,
        "windows": 4,
        "padded_rows": 3,
        "truncated_rows": 2,
    }
    assert meta["vocab_sha256"] == vocab.sha256
    assert set(meta["files"]) == {
        f"{s}/{n}.npy"
        for s in ("train", "valid", "test")
        for n in ("stream", "windows", "padded", "lengths", "doc_ids", "labels")
    }
    assert read_json(tmp_path / "w" / "meta.json") == meta
    # OOV tokens map to <unk>; padding is 0.
    valid = np.load(tmp_path / "w" / "valid" / "padded.npy")
    assert valid.tolist() == [[vocab.id("a"), UNK, vocab.id("."), EOS]] and PAD == 0


def test_only_requested_modes_and_sentences(tmp_path: Path) -> None:
    tokens = token_shards(tmp_path / "t", DOCS)
    counts, docs = count_tokens(tokens)
    vocab = build_vocab("word", counts["train"], 100, 1, docs["train"])
    cfg = section("windows.word", modes=("window", "padded"), length=2, unit="sentence", max_length=8)
    build("word", cfg, tokens, vocab, tmp_path / "w")
    test = tmp_path / "w" / "test"
    assert sorted(p.name for p in test.iterdir()) == ["doc_ids.npy", "lengths.npy", "padded.npy", "windows.npy"]
    # "e a b c ." then "a": two sentences of one document
    assert np.load(test / "lengths.npy").tolist() == [6, 2] and np.load(test / "doc_ids.npy").tolist() == [3, 3]


def test_window_longer_than_stream_is_a_clear_error(tmp_path: Path) -> None:
    tokens = token_shards(tmp_path / "t", DOCS)
    counts, docs = count_tokens(tokens)
    vocab = build_vocab("word", counts["train"], 100, 1, docs["train"])
    with pytest.raises(DataError, match=r"windows.word.length=9 is longer than the test stream \(8 tokens"):
        build("word", section("windows.word", length=9), tokens, vocab, tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_missing_split_is_a_clear_error(tmp_path: Path) -> None:
    tokens = token_shards(tmp_path / "t", [d for d in DOCS if d[0] != "valid"])
    counts, docs = count_tokens(tokens)
    vocab = build_vocab("word", counts["train"], 100, 1, docs["train"])
    with pytest.raises(DataError, match="no valid documents"):
        build("word", section("windows.word", length=2), tokens, vocab, tmp_path / "w")
    no_train = token_shards(tmp_path / "t2", [d for d in DOCS if d[0] != "train"])
    with pytest.raises(DataError, match="no train documents"):
        count_tokens(no_train)


# --- an empty vocabulary is refused before anything is written ----------------------------------


def test_min_count_above_every_count_is_refused(tmp_path: Path) -> None:
    counts, docs = count_tokens(token_shards(tmp_path / "t", DOCS))
    with pytest.raises(DataError) as e:
        write_vocab("word", counts, docs, section("vocab.word", min_count=4), tmp_path)
    message = str(e.value)
    assert "vocab.word.min_count is 4" in message and "3 train documents" in message
    assert "11 tokens of 7 types, the most frequent seen 3 times" in message
    assert "lower vocab.word.min_count to 3 or less" in message
    assert not (tmp_path / "data").exists()  # neither the vocabulary nor its metrics
    assert len(write_vocab("word", counts, docs, section("vocab.word", min_count=3), tmp_path)) == len(SPECIALS) + 1


def test_a_pattern_that_finds_no_token_is_refused(tmp_path: Path) -> None:
    shards = token_shards(tmp_path / "t", [("train", []), ("train", ["<unk>"]), ("valid", ["a"]), ("test", [])])
    counts, docs = count_tokens(shards)
    with pytest.raises(DataError, match=r"vocab \(word\): tokenize.word.pattern found no token besides .* in 2 train"):
        write_vocab("word", counts, docs, section("vocab.word"), tmp_path)
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_digits_only_corpus_fails_at_the_vocab_stage(tmp_path: Path) -> None:
    """corpus, tokenize and vocab as dvc runs them: the ASCII word rule finds no token in digits."""
    repo = copy_repo(tmp_path / "repo")
    digits = tmp_path / "digits.txt"
    digits.write_text("".join(f"{i * 7919 % 100_003} {i}\n" for i in range(400)), encoding="utf-8")
    over = {
        "corpus": {"source": "text", "text": {"train": str(digits)}},
        "tokenize": {"word": {"pattern": "[A-Za-z]+|[-!?.:;,()]"}},  # the book's ASCII rule
    }
    write_params(repo / "params.yaml", over)
    env = tool_env(PREFECT_HOME=str(repo / ".prefect"))
    run(repo, sys.executable, "-m", "pipeline.corpus", env=env, timeout=120)
    run(repo, sys.executable, "-m", "pipeline.tokenize", "--level", "word", "--workers", "1", env=env, timeout=120)
    proc = run(repo, sys.executable, "-m", "pipeline.vocab", "--level", "word", env=env, check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: vocab (word): tokenize.word.pattern"), proc.stderr
    assert "train documents" in lines[0] and "tokenize.word.pattern: unicode" in lines[0]
    assert not (repo / "data/vocab/word.json").exists() and not (repo / "data/metrics/vocab-word.json").exists()
