"""Skip-gram: vectorized pairs, subsampling, training on real and planted corpora, vector files.

The model and its SGD settings follow Abrahams, Hafner, Erwitt & Scarpinelli, *TensorFlow for Machine
Intelligence* (Bleeding Edge Press, 2016), chapter 6.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.harness import reference_pairs, section
from models.skipgram import SkipgramTask, analogy_accuracy, nearest
from models.trainer import Trainer
from ops.cli import main as cli
from pipeline.errors import DataError
from pipeline.paths import TextDataset
from pipeline.skipgram.pairs import PassPlan, clip_ids, keep_probabilities, noise_distribution, stream_counts
from pipeline.sources import text, wikipedia
from pipeline.textdata import build_text_dataset
from pipeline.vectors import align_text_vectors, load_embeddings, save_embeddings, write_word2vec
from pipeline.vocab import EOS, UNK, Vocab

ENWIKI = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
# Test-sized model; the data path, pairs, loss and optimizer are the real ones.
SMALL = {"emb_dim": 32, "negatives": 16, "batch_size": 256, "device": "cpu", "epochs": 3, "epoch_size": 100}

# --- pairs ------------------------------------------------------------------------------------


def _stream(rng: np.random.Generator, docs: int = 40, vocab: int = 30) -> np.ndarray:
    parts = [np.array([EOS])]
    for _ in range(docs):
        parts += [rng.integers(3, vocab, int(rng.integers(0, 25))), np.array([EOS])]
    return np.concatenate(parts)


@pytest.mark.parametrize("max_context", [1, 3, 10])
def test_pairs_equal_the_plain_python_windows_and_stay_in_their_document(max_context: int) -> None:
    rng = np.random.default_rng(max_context)
    ids = _stream(rng)
    keep = keep_probabilities(stream_counts(ids, 30), 0.02)
    plan = PassPlan.build(ids, keep, max_context, np.random.default_rng(7), shuffle=False)
    centers, contexts = plan.all_pairs()
    assert list(zip(centers.tolist(), contexts.tolist())) == reference_pairs(
        plan.tokens.tolist(), plan.lo.tolist(), plan.hi.tolist()
    )
    # Windows: at most max_context each side, never across an <eos>, never the center itself.
    assert (plan.hi - plan.lo - 1 <= 2 * max_context).all()
    assert EOS not in centers and EOS not in contexts
    whole = PassPlan.build(ids, np.ones(30), max_context, np.random.default_rng(7), shuffle=False)  # nothing dropped
    doc = np.cumsum(ids == EOS)[ids != EOS]  # document of each word
    pos = np.arange(len(doc))
    assert (doc[whole.lo] == doc).all() and (doc[whole.hi - 1] == doc).all()
    assert ((pos - whole.lo <= max_context) & (whole.hi - 1 - pos <= max_context)).all()
    # Batches of a shuffled pass are the same pairs, in another order, taken modulo the pass.
    shuffled = PassPlan.build(ids, keep, max_context, np.random.default_rng(7))
    c2, o2 = shuffled.pairs(np.arange(shuffled.total))
    assert sorted(zip(c2.tolist(), o2.tolist())) == sorted(zip(centers.tolist(), contexts.tolist()))
    c3, _ = shuffled.pairs(np.arange(shuffled.total, shuffled.total + 5))
    assert (c3 == c2[:5]).all()
    # span, the training batches' fast path, is the same enumeration (wrapping included).
    for start, stop in [(0, 7), (3, shuffled.total), (shuffled.total - 4, 2 * shuffled.total + 9)]:
        got, want = shuffled.span(start, stop), shuffled.pairs(np.arange(start, stop))
        assert all(np.array_equal(a, b) for a, b in zip(got, want))


def test_window_sizes_are_uniform_in_1_to_max_context() -> None:
    ids = np.concatenate([[EOS], np.full(20_000, 5), [EOS]])  # one long document
    plan = PassPlan.build(ids, np.ones(10), 4, np.random.default_rng(0), shuffle=False)
    inner = slice(10, -10)  # away from the document's ends, a window of b gives 2b pairs
    sizes = (plan.hi - plan.lo - 1)[inner] // 2
    assert set(np.unique(sizes)) == {1, 2, 3, 4}
    assert np.allclose(np.bincount(sizes)[1:] / len(sizes), 0.25, atol=0.02)


def test_subsampling_and_noise_follow_word2vec() -> None:
    counts = np.array([0, 0, 0, 1_000_000, 1_000, 10])  # specials, then a frequent, a mid and a rare word
    keep = keep_probabilities(counts, 1e-3)
    f = counts[3] / counts.sum()
    assert keep[3] == pytest.approx((np.sqrt(f / 1e-3) + 1) * 1e-3 / f) and keep[3] < 0.05
    assert keep[5] == 1.0 and keep[0] == 1.0  # rare words are always kept
    assert (keep_probabilities(counts, None) == 1).all()
    q = noise_distribution(counts, 0.75, exclude=(0, 2))
    assert q[0] == q[2] == 0 and q.sum() == pytest.approx(1)
    assert q[3] / q[4] == pytest.approx(1000**0.75)
    assert (clip_ids(np.array([2, 5, 9]), 6) == [2, 5, UNK]).all()


# --- training ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[TextDataset, list[list[str]]]:
    """A corpus whose documents each draw their words from one of 12 groups of 5 (plus fillers),
    built through the real stages: text source → tokenize → vocab → windows."""
    rng = np.random.default_rng(0)
    syllables = ["ka", "lo", "mi", "ne", "pu", "ra", "si", "to", "vu", "ze", "bo", "da"]
    groups = [[f"{syllables[g]}{syllables[(5 * g + i) % 12]}x" for i in range(5)] for g in range(12)]
    lines = []
    for _ in range(1500):
        g = groups[rng.integers(12)]
        lines.append(
            " ".join(
                g[rng.integers(5)] if rng.random() < 0.8 else ("the", "and", "of")[rng.integers(3)] for _ in range(30)
            )
        )
    root = tmp_path_factory.mktemp("planted")
    (root / "corpus.txt").write_text("\n".join(lines) + "\n")
    where = TextDataset(root / "data")
    source = text.read(section("corpus.text", train=str(root / "corpus.txt"), holdout=0.1))
    windows = section("windows.word", modes=("stream",))
    words = section("imdb_data.tokenize")  # Abrahams et al.'s rule
    build_text_dataset(source, where, "word", words, section("vocab.word"), windows, "planted")
    return where, groups


def _trainer(where: TextDataset, out: Path, **over: object) -> Trainer:
    p = section("skipgram", **{**SMALL, **over})
    vocab = Vocab.load(where.vocab)
    return Trainer(
        lambda d: SkipgramTask(p, where.windows, vocab, d, vocab_path=str(where.vocab)),
        p,
        out,
        "test",
    )


@pytest.mark.parametrize("loss", ["negative_sampling", "nce"])
def test_planted_neighbours_are_found(planted: tuple[TextDataset, list[list[str]]], tmp_path: Path, loss: str) -> None:
    where, groups = planted
    t = _trainer(
        where, tmp_path, loss=loss, max_context=5, lr=2.0, momentum=0.5
    )  # SGD with momentum, as Abrahams et al. 2016, ch. 6
    history = t.fit()
    assert history[-1]["valid_loss"] < history[0]["valid_loss"]
    vocab = Vocab.load(where.vocab)
    words = [w for g in groups for w in g]
    lists = nearest(t.task.embeddings(), vocab.tokens, [vocab.id(w) for w in words], k=4)
    group_of = {w: i for i, g in enumerate(groups) for w in g}
    hits = np.mean([sum(group_of.get(n) == group_of[w] for n, _ in nb) / 4 for w, nb in zip(words, lists)])
    assert hits > 0.9, hits  # a word's 4 nearest are its 4 group mates, for almost every word


def test_batches_are_a_pure_function_of_the_step(planted: tuple[TextDataset, list[list[str]]]) -> None:
    where, _ = planted
    vocab = Vocab.load(where.vocab)
    p = section("skipgram", **SMALL)
    a = SkipgramTask(p, where.windows, vocab, torch.device("cpu"), vocab_path="v")
    b = SkipgramTask(p, where.windows, vocab, torch.device("cpu"), vocab_path="v")
    steps = [0, 5, a.steps_per_pass + 3, 2 * a.steps_per_pass, 1]  # across passes, out of order
    for step in steps:
        assert all(torch.equal(x, y) for x, y in zip(a.batch(step), b.batch(step)))
        assert torch.equal(a.noise(step, 1), b.noise(step, 1))
    assert not torch.equal(a.batch(0)[0], a.batch(a.steps_per_pass)[0])  # a new pass: a new order


@pytest.mark.slow
def test_loss_falls_on_the_real_wikipedia_fragment(shared_data: Path, tmp_path: Path) -> None:
    where = TextDataset(tmp_path / "data")
    src = section(
        "corpus.wikipedia", url=str(shared_data / "wikipedia-xml" / ENWIKI), holdout=0.05, cache_dir=str(tmp_path)
    )
    build_text_dataset(
        wikipedia.read(src),
        where,
        "word",
        section("imdb_data.tokenize"),  # Abrahams et al.'s rule
        section("vocab.word", max_size=5000),
        section("windows.word", modes=("stream",)),
        "enwiki fragment",
    )
    t = _trainer(
        where, tmp_path / "ckpt", batch_size=500, negatives=64
    )  # lr 0.5, momentum 0.5 (Abrahams et al. 2016, ch. 6)
    before = t.task.validate()["loss"]
    history = t.fit()
    losses = [before] + [h["valid_loss"] for h in history]
    assert all(b < a for a, b in itertools.pairwise(losses)), losses  # falls every epoch
    assert losses[-1] < 0.5 * losses[0]
    assert history[-1]["train_loss"] < before


def test_bad_data_is_named(tmp_path: Path, planted: tuple[TextDataset, list[list[str]]]) -> None:
    where, _ = planted
    other = Vocab("word", ("<pad>", "<unk>", "<eos>", "x"), (0, 0, 0, 1))
    with pytest.raises(DataError, match="encoded with another vocabulary"):
        SkipgramTask(section("skipgram", **SMALL), where.windows, other, torch.device("cpu"), vocab_path="v")


# --- vectors on disk, neighbours, analogies -----------------------------------------------------


def _vocab(*words: str) -> Vocab:
    return Vocab("word", ("<pad>", "<unk>", "<eos>", *words), (0, 0, 0, *range(len(words), 0, -1)))


def test_embeddings_npy_is_tied_to_its_vocabulary(tmp_path: Path) -> None:
    vocab, other = _vocab("cat", "dog", "fish"), _vocab("dog", "cat", "fish")
    matrix = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    save_embeddings(tmp_path / "embeddings.npy", matrix, vocab, "data/vocab/word.json")
    assert np.array_equal(load_embeddings(tmp_path / "embeddings.npy", vocab), matrix)
    with pytest.raises(
        DataError,
        match=r"rows are the ids of vocabulary data/vocab/word\.json \(6 tokens.*not of "
        r"data/imdb/vocab\.json \(6 tokens.*word2vec text export",
    ):
        load_embeddings(tmp_path / "embeddings.npy", other, "data/imdb/vocab.json")
    (tmp_path / "embeddings.json").unlink()
    with pytest.raises(DataError, match=r"embeddings\.json: not found"):
        load_embeddings(tmp_path / "embeddings.npy", vocab)


def test_word2vec_and_glove_text_align_by_token_and_count_oov(tmp_path: Path) -> None:
    vocab = _vocab("cat", "dog", "fish", "zebra")
    matrix = np.random.default_rng(1).normal(size=(7, 3)).astype(np.float32)
    write_word2vec(tmp_path / "v.txt", matrix[3:6], vocab.tokens[3:6])  # no zebra
    assert (tmp_path / "v.txt").read_text().splitlines()[0] == "3 3"
    got = align_text_vectors(tmp_path / "v.txt", vocab)
    assert got.format == "word2vec" and got.oov == 1 and got.found.tolist() == [False] * 3 + [True] * 3 + [False]
    assert np.allclose(got.matrix[3:6], matrix[3:6], atol=1e-5)
    # GloVe: no header; a cased word matches our lowercase token unless the exact form is there too.
    (tmp_path / "g.txt").write_text("Cat 1 1\nZebra 2 2\nzebra 3 3\nunrelated 4 4\n", encoding="utf-8")
    glove = align_text_vectors(tmp_path / "g.txt", vocab)
    assert glove.format == "glove" and glove.summary()["oov"] == 2 and glove.summary()["found"] == 2
    assert glove.matrix[vocab.id("cat")].tolist() == [1, 1] and glove.matrix[vocab.id("zebra")].tolist() == [3, 3]
    (tmp_path / "bad.txt").write_text("cat 1 2\ndog 1 2 3\n")
    with pytest.raises(DataError, match=r"bad\.txt:2: 3 numbers where the file's vectors have 2"):
        align_text_vectors(tmp_path / "bad.txt", vocab)
    with pytest.raises(DataError, match="none of the 4 vocabulary words"):
        (tmp_path / "none.txt").write_text("apple 1 2\n")
        align_text_vectors(tmp_path / "none.txt", vocab)


def test_analogies_by_3cosadd(tmp_path: Path) -> None:
    vocab = _vocab("man", "woman", "king", "queen", "apple", "paris")
    e = np.zeros((len(vocab), 4), np.float32)
    e[vocab.id("man")], e[vocab.id("woman")] = [1, 0, 0, 0.1], [1, 1, 0, 0.1]
    e[vocab.id("king")], e[vocab.id("queen")] = [0, 0, 1, 0.1], [0, 1, 1, 0.1]
    e[vocab.id("apple")], e[vocab.id("paris")] = [0, 0, 0, 1], [1, 0, 1, 0]
    (tmp_path / "q.txt").write_text(": gender\nMan Woman King Queen\nman woman king apple\nman woman king unicorn\n")
    got = analogy_accuracy(e, vocab, tmp_path / "q.txt")
    assert (got["questions"], got["answered"], got["skipped"], got["correct"]) == (3, 2, 1, 1)
    assert got["accuracy"] == 0.5 and got["sections"] == {"gender": {"correct": 1, "answered": 2}}
    nb = nearest(e, vocab.tokens, [vocab.id("king")], k=2)[0]
    assert nb[0][0] == "queen" and all(t != "king" for t, _ in nb)


def test_cli_neighbors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vocab = _vocab("man", "woman", "king", "queen")
    vocab.save(tmp_path / "word.json")
    e = np.random.default_rng(0).normal(size=(len(vocab), 8)).astype(np.float32)
    e[vocab.id("queen")] = e[vocab.id("king")] + 0.01
    save_embeddings(tmp_path / "embeddings.npy", e, vocab, tmp_path / "word.json")
    with contextlib.chdir(tmp_path):
        assert cli(["neighbors", "king", "-k", "2", "--embeddings", "embeddings.npy", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["neighbors"]["king"][0]["word"] == "queen"
        assert cli(["neighbors", "unicorn", "--embeddings", "embeddings.npy"]) == 2
        assert "'unicorn' is not among the 7 words" in capsys.readouterr().err
        shutil.copy(tmp_path / "word.json", tmp_path / "w2.json")
        _vocab("a", "b", "c", "d").save(tmp_path / "w2.json")
        assert cli(["neighbors", "a", "--embeddings", "embeddings.npy", "--vocab", "w2.json"]) == 2
        assert "row i would be another word" in capsys.readouterr().err
