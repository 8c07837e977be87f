"""The OCR letters source on small files built in exactly Taskar's letter.data format."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.harness import section
from pipeline.corpus import write_documents
from pipeline.errors import DataError, ParamsError
from pipeline.sources import ocr
from tests.httpserver import HTTPTestServer

# (word_id, fold, word): three words of different lengths across folds.
WORDS = [(1, 0, "ommanding"), (2, 8, "ex"), (3, 9, "quiet"), (4, 3, "a")]


def _images(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, size=(n, 128), dtype=np.uint8)


def _lines(words=WORDS, trailing_tab: bool = True, shuffle: bool = False) -> tuple[list[str], np.ndarray]:
    """letter.data lines: id, letter, next_id, word_id, position, fold, 128 pixels (tab-separated)."""
    total = sum(len(w) for _, _, w in words)
    images = _images(0, total)
    lines = []
    lid = 1
    for word_id, fold, word in words:
        for pos, ch in enumerate(word, 1):
            nxt = lid + 1 if pos < len(word) else -1
            px = "\t".join(str(int(v)) for v in images[lid - 1])
            lines.append(f"{lid}\t{ch}\t{nxt}\t{word_id}\t{pos}\t{fold}\t{px}" + ("\t" if trailing_tab else ""))
            lid += 1
    if shuffle:
        random.Random(1).shuffle(lines)
    return lines, images


def _write(path: Path, lines: list[str], gz: bool) -> Path:
    data = ("\n".join(lines) + "\n").encode("ascii")
    if gz:
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def _read(path: Path, tmp_path: Path, **kw) -> pa.Table:
    params = section("corpus.ocr", url=str(path), cache_dir=str(tmp_path / "cache"), **kw)
    return pa.concat_tables(ocr.read(params))


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
@pytest.mark.parametrize("trailing_tab", [True, False])
def test_words_padded_with_mask_and_images(tmp_path, gz, trailing_tab):
    lines, images = _lines(trailing_tab=trailing_tab, shuffle=True)  # file order must not matter
    table = _read(_write(tmp_path / "letter.data", lines, gz), tmp_path)
    L = 9  # the longest word
    assert table.column_names == ["split", "text", "source_id", "fold", "length", "letters", "pixels", "mask"]
    assert table.schema.field("pixels").type == pa.list_(pa.uint8(), L * 128)
    assert table.schema.field("letters").type == pa.list_(pa.string(), L)
    assert table.schema.field("mask").type == pa.list_(pa.bool_(), L)
    assert table["text"].to_pylist() == ["ommanding", "ex", "quiet", "a"]
    assert table["source_id"].to_pylist() == ["1", "2", "3", "4"]
    assert table["split"].to_pylist() == ["train", "valid", "test", "train"]
    assert table["fold"].to_pylist() == [0, 8, 9, 3]
    assert table["length"].to_pylist() == [9, 2, 5, 1]
    assert table["letters"][1].as_py() == ["e", "x"] + [""] * 7
    mask = np.asarray(table["mask"].combine_chunks().values).reshape(-1, L)
    assert mask.sum(axis=1).tolist() == [9, 2, 5, 1] and mask[1].tolist() == [True, True] + [False] * 7
    pixels = np.asarray(table["pixels"].combine_chunks().values).reshape(-1, L, 16, 8)
    assert np.array_equal(pixels[0].reshape(L, 128), images[0:9])  # "ommanding": ids 1-9
    assert np.array_equal(pixels[2, :5].reshape(5, 128), images[11:16])  # "quiet": ids 12-16
    assert not pixels[1, 2:].any() and not pixels[3, 1:].any()  # zero images past the end


def test_chain_follows_next_id_not_file_order(tmp_path):
    # Word 7 is spelled by ids 10 -> 3 -> 5: not ascending, and interleaved with word 8 (id 4).
    px = "\t".join(["0"] * 128)
    lines = [
        f"10\tc\t3\t7\t1\t2\t{px}",
        f"3\ta\t5\t7\t2\t2\t{px}",
        f"5\tt\t-1\t7\t3\t2\t{px}",
        f"4\ti\t-1\t8\t1\t2\t{px}",
    ]
    table = _read(_write(tmp_path / "l.data", lines, gz=False), tmp_path, max_length=14)
    assert table["text"].to_pylist() == ["i", "cat"]  # ordered by the id of the first letter (4, then 10)
    assert table.schema.field("mask").type == pa.list_(pa.bool_(), 14)


def test_max_length_too_small_is_an_error(tmp_path):
    lines, _ = _lines()
    with pytest.raises(DataError, match=r"l\.data:1: a word of 9 letters is longer than corpus\.ocr\.max_length \(5\)"):
        _read(_write(tmp_path / "l.data", lines, gz=False), tmp_path, max_length=5)


def _broken(lines: list[str], i: int, field: int, value: str) -> list[str]:
    out = list(lines)
    parts = out[i].rstrip("\t").split("\t")
    parts[field] = value
    out[i] = "\t".join(parts)
    return out


def _mutations() -> list[tuple[str, list[str], str]]:
    lines, _ = _lines()
    short = list(lines)
    short[2] = "\t".join(short[2].split("\t")[:100])
    extra = list(lines)
    extra[1] = extra[1] + "\t1\t0"
    return [
        ("field count", short, r":3: expected 134 tab-separated fields \(6 \+ 128 pixels\), got 100"),
        ("extra fields", extra, r":2: expected 134 tab-separated fields"),
        ("non-binary pixel", _broken(lines, 1, 6 + 5, "2"), r":2: pixel 5 must be 0 or 1, got '2'"),
        ("two-char pixel", _broken(_broken(lines, 1, 6 + 5, "11"), 1, 6 + 6, ""), r":2: pixel 5 must be 0 or 1"),
        ("non-integer id", _broken(lines, 3, 0, "x"), r":4: id, next_id, word_id, position and fold must be integers"),
        ("bad letter", _broken(lines, 0, 1, "ab"), r":1: the letter must be one character"),
        ("bad fold", _broken(lines, 0, 5, "12"), r":1: fold must be 0-9"),
        ("missing next", _broken(lines, 4, 2, "999"), r":5: broken chain: next_id 999 names no letter"),
        ("claimed twice", _broken(lines, 9, 2, "3"), r":10: broken chain: letter 3 is already the next letter of"),
        ("cycle", _broken(lines, 8, 2, "1"), r":1: broken chain: this letter is on a cycle"),
        ("duplicate id", _broken(lines, 5, 0, "2"), r":6: id 2 already used on line 2"),
        ("word_id mismatch", _broken(lines, 3, 3, "42"), r":4: broken chain: this letter continues the word of line 1"),
    ]


@pytest.mark.parametrize("lines,message", [m[1:] for m in _mutations()], ids=[m[0] for m in _mutations()])
def test_malformed_lines_fail_with_the_line_number(tmp_path, lines, message):
    with pytest.raises(DataError, match=message):
        _read(_write(tmp_path / "l.data", lines, gz=False), tmp_path)


def test_folds_must_not_overlap(tmp_path):
    lines, _ = _lines()
    with pytest.raises(ParamsError, match=r"folds \[8\] are in both"):
        _read(_write(tmp_path / "l.data", lines, gz=False), tmp_path, valid_folds=(8,), test_folds=(8, 9))


def test_over_http_and_through_the_corpus_stage_writer(tmp_path):
    lines, images = _lines()
    www = tmp_path / "www"
    www.mkdir()
    _write(www / "letter.data.gz", lines, gz=True)
    with HTTPTestServer(root=www) as srv:
        params = section("corpus.ocr", url=srv.url("letter.data.gz"), cache_dir=str(tmp_path / "cache"))
        stats = write_documents(ocr.read(params), tmp_path / "docs", "source 'ocr'")
    assert {k: v["docs"] for k, v in stats.items()} == {"train": 2, "valid": 1, "test": 1}
    table = pq.read_table(tmp_path / "docs")
    assert table["doc_id"].to_pylist() == [0, 1, 2, 3]
    assert table.schema.field("pixels").type == pa.list_(pa.uint8(), 9 * 128)  # survives Parquet
    pixels = np.asarray(table["pixels"].combine_chunks().values).reshape(-1, 9, 128)
    assert np.array_equal(pixels[0], images[:9])
