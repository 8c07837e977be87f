"""Data for the task tests (sentiment, LM classification, OCR): the real aclImdb sample through the
imdb_data stage, and OCR letter files written in Taskar's exact letter.data format with
right-context-dependent letters."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import SHARED_DATA, merge, write_params

IMDB_SAMPLE = SHARED_DATA / "aclImdb-sample"  # 250 reviews per split and class; read in place

# The real imdb_data section, shrunk for CPU tests: a 2,000-word vocabulary, reviews cut at 150 tokens.
IMDB_DATA = {
    "imdb_data": {
        "source": {"url": str(IMDB_SAMPLE), "sha256": None, "holdout": 0.1},
        "vocab": {"max_size": 2000},
        "windows": {"max_length": 150},
    }
}


def build_imdb(root: Path, overrides: dict[str, Any] | None = None) -> Path:
    """Run the imdb_data stage (and lmclass_data) on the sample in ``root``; return ``root``."""
    from pipeline.lmclass import data as lmclass_data
    from pipeline.sentiment import data as imdb_data

    write_params(root / "params.yaml", merge(IMDB_DATA, overrides or {}))
    with contextlib.chdir(root):
        imdb_data.run("params.yaml")
        lmclass_data.run("params.yaml")
    return root


def letter_data(path: Path, words: int = 400, seed: int = 0, noise: float = 0.05) -> Path:
    """Words in Taskar's letter.data format whose letters can only be read with their right neighbour.

    26 letters, 26 distinct random 16×8 glyph templates, as 13 twin pairs (a b), (c d), ...
    A letter's image is its own template or its twin's, at random, with ``noise`` of the
    pixels flipped: the image tells the pair, never which twin. Which twin a letter is
    follows from its right neighbour: the first of the pair when the next letter's pair
    is even (a, e, i, ...), the second when odd; the last letter is always the first.
    A forward-only labeller reads each twin blind (about half of them wrong); one that
    also reads right to left can get every letter.
    """
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 2, (26, 128))
    lines, lid = [], 1
    for w in range(words):
        n = int(rng.integers(3, 9))
        pairs = rng.integers(0, 13, n)
        letters = 2 * pairs + np.append(pairs[1:] % 2, 0)
        for pos in range(n):
            shown = 2 * pairs[pos] + rng.integers(0, 2)
            image = templates[shown] ^ (rng.random(128) < noise)
            fields = [lid, chr(ord("a") + letters[pos]), lid + 1 if pos < n - 1 else -1, w + 1, pos + 1, w % 10]
            lines.append("\t".join([*map(str, fields), *map(str, image.astype(int))]) + "\t")  # the real file's tab
            lid += 1
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path
