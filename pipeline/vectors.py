"""Word vectors on disk: ``embeddings.npy`` tied to its vocabulary, and the word2vec / GloVe text formats.

    save_embeddings("artifacts/skipgram/embeddings.npy", matrix, vocab, "data/vocab/word.json")
    matrix = load_embeddings("artifacts/skipgram/embeddings.npy", vocab)   # checks the vocabulary
    write_word2vec("artifacts/skipgram/vectors.txt", matrix, vocab.tokens)
    aligned = align_text_vectors("glove.6B.300d.txt", vocab)               # rows in our id order
    aligned.matrix, aligned.found, aligned.oov                             # OOV: our words it lacks

``embeddings.npy`` (V, D) float32 has one row per id of the vocabulary it was
trained with; ``embeddings.json`` beside it records that vocabulary's path,
size and sha256, so a model fed another vocabulary fails with both named instead
of silently reading other words' rows. The text formats carry the tokens
themselves, so they align to any vocabulary by token.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import DataError
from pipeline.io import atomic_open, read_json, write_json
from pipeline.params import SPECIALS
from pipeline.vocab import Vocab


def sidecar(path: str | Path) -> Path:
    """``embeddings.npy`` -> ``embeddings.json``: the vocabulary the rows belong to."""
    return Path(path).with_suffix(".json")


def save_embeddings(
    path: str | Path, matrix: np.ndarray, vocab: Vocab, vocab_path: str | Path, trained: int | None = None
) -> None:
    """Write ``matrix`` (V, D) as float32 .npy with its vocabulary reference beside it, atomically.

    ``trained``: rows 0..trained-1 were trained; later ids (rarer words) repeat <unk>'s row.
    """
    matrix = np.asarray(matrix, np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(vocab):
        raise ValueError(f"embeddings must be (vocabulary size {len(vocab)}, D), got {matrix.shape}")
    with atomic_open(path, "wb") as f:
        np.save(f, matrix)
    write_json(
        sidecar(path),
        {
            "vocab": {"path": str(vocab_path), "size": len(vocab), "sha256": vocab.sha256},
            "shape": list(matrix.shape),
            "trained": trained or len(vocab),
        },
    )


def embeddings_info(path: str | Path) -> dict[str, Any]:
    """The sidecar of an ``embeddings.npy``: its vocabulary reference, shape and trained rows."""
    try:
        return read_json(sidecar(path))
    except FileNotFoundError:
        raise DataError(
            f"{sidecar(path)}: not found; embeddings.npy needs its embeddings.json beside it "
            "(the skipgram stage writes both: dvc repro skipgram)"
        ) from None


def load_embeddings(
    path: str | Path, vocab: Vocab, vocab_path: str | Path = "the classifier's vocabulary"
) -> np.ndarray:
    """An ``embeddings.npy`` whose rows are ``vocab``'s ids; a DataError naming both vocabularies if not."""
    path = Path(path)
    ref: dict[str, Any] = embeddings_info(path)["vocab"]
    try:
        matrix = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: embeddings not found; train them with `dvc repro skipgram`") from None
    if ref["sha256"] != vocab.sha256:
        raise DataError(
            f"{path}: its rows are the ids of vocabulary {ref['path']} ({ref['size']} tokens, sha256 "
            f"{ref['sha256'][:12]}), not of {vocab_path} ({len(vocab)} tokens, sha256 {vocab.sha256[:12]}): "
            "row i would be another word. Pass the word2vec text export instead (vectors.txt beside it), "
            "which is aligned by token, or train the embeddings on this vocabulary"
        )
    return np.asarray(matrix, np.float32)


def write_word2vec(path: str | Path, matrix: np.ndarray, tokens: tuple[str, ...] | list[str]) -> None:
    """word2vec's text format: a ``count dim`` header, then ``token v1 … vD`` per row (%.6g)."""
    matrix = np.asarray(matrix, np.float32)
    bad = [t for t in tokens if not t or any(ch.isspace() for ch in t)]
    if bad:
        raise ValueError(f"tokens with whitespace cannot be written in word2vec text format: {bad[:5]}")
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(f"{matrix.shape[0]} {matrix.shape[1]}\n")
        for start in range(0, len(tokens), 4096):  # a block of rows per write: bounded memory
            block = matrix[start : start + 4096]
            body = np.char.mod("%.6g", block)
            f.writelines(f"{t} {' '.join(row)}\n" for t, row in zip(tokens[start : start + 4096], body.tolist()))


@dataclass(frozen=True)
class AlignedVectors:
    """Text vectors in a vocabulary's id order."""

    matrix: np.ndarray  # (V, D) float32; zero rows where not found
    found: np.ndarray  # (V,) bool
    oov: int  # vocabulary words (specials excluded) the file does not have
    words: int  # vocabulary words (specials excluded)
    format: str  # "word2vec" (with a header line) or "glove"

    def summary(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "dim": int(self.matrix.shape[1]),
            "found": self.words - self.oov,
            "oov": self.oov,
            "oov_rate": self.oov / max(self.words, 1),
        }


def _header(line: str) -> tuple[int, int] | None:
    parts = line.split()
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return int(parts[0]), int(parts[1])
    return None


def align_text_vectors(path: str | Path, vocab: Vocab) -> AlignedVectors:
    """Read word2vec or GloVe text vectors, keeping the rows of ``vocab``'s words.

    A word matches exactly; a word still unmatched when the file ends takes the vector
    of its lowercased form if the file has that (GloVe is lowercase, word2vec's
    GoogleNews is cased, our tokenizer lowercases by default). Only matching lines are
    parsed into numbers, so a 400k-word file costs one split per line.
    """
    path = Path(path)
    index = {t: i for i, t in enumerate(vocab.tokens) if t not in SPECIALS}
    matrix: np.ndarray | None = None
    exact = np.zeros(len(vocab), bool)
    lower: dict[int, np.ndarray] = {}
    fmt, dim = "glove", None
    # Opened apart from the `with f:` below so that only open()'s FileNotFoundError becomes
    # "not found"; the `with` closes it.
    try:
        f = open(path, encoding="utf-8", errors="strict")  # noqa: SIM115
    except FileNotFoundError:
        raise DataError(f"{path}: pretrained vectors not found") from None
    with f:
        try:
            for lineno, line in enumerate(f, 1):
                if lineno == 1 and (head := _header(line)) is not None:
                    fmt, dim = "word2vec", head[1]
                    continue
                word, _, rest = line.rstrip("\n").partition(" ")
                if not rest:
                    continue
                i = index.get(word)
                j = index.get(word.lower()) if i is None else None
                if i is None and (j is None or exact[j] or j in lower):
                    continue
                vec = np.array(rest.split(), np.float32)
                if dim is None:
                    dim = len(vec)
                if len(vec) != dim:
                    raise DataError(f"{path}:{lineno}: {len(vec)} numbers where the file's vectors have {dim}")
                if matrix is None:
                    matrix = np.zeros((len(vocab), dim), np.float32)
                if i is not None:
                    matrix[i], exact[i] = vec, True
                else:
                    lower[j] = vec
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text ({e}); pass a word2vec or GloVe .txt, not a binary file") from None
        except ValueError as e:
            raise DataError(f"{path}: not word2vec or GloVe text ({e})") from None
    if matrix is None:
        raise DataError(f"{path}: none of the {len(index)} vocabulary words has a vector here; is it the right file?")
    found = exact.copy()
    for j, vec in lower.items():
        if not exact[j]:
            matrix[j], found[j] = vec, True
    words = len(index)
    return AlignedVectors(matrix, found, words - int(found.sum()), words, fmt)
