"""The plain-text source on the real corpora in ../shared/data, and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipeline.corpus import write_documents
from pipeline.errors import DataError
from pipeline.params import TextParams
from pipeline.sources import text


def _read(**kw: object) -> pa.Table:
    return pa.concat_tables(text.read(TextParams(**kw)))


def _count(table: pa.Table, split: str) -> int:
    return int((table["split"].to_numpy(zero_copy_only=False) == split).sum())


def test_wikitext_one_document_per_nonblank_line(shared_data: Path) -> None:
    # Counts from `grep -c -v '^\s*$'` on the files: an independent method.
    t = _read(
        train=str(shared_data / "wikitext-2/valid.txt"), valid=str(shared_data / "wikitext-2/test.txt"), holdout=0.1
    )
    assert _count(t, "valid") == 2891
    assert _count(t, "train") + _count(t, "test") == 2461
    assert 150 < _count(t, "test") < 350  # ~10% of train held out
    by_source = dict(zip(t["source_id"].to_pylist(), t["text"].to_pylist()))
    assert by_source[str(shared_data / "wikitext-2/valid.txt") + ":2"] == " = Homarus gammarus = "  # line 1 is blank


def test_folder_of_files_one_document_per_file(shared_data: Path) -> None:
    t = _read(train=str(shared_data / "nlptutorial-wiki-en"), glob="*.word", unit="file")
    assert t.num_rows == 2  # wiki-en-test.word and wiki-en-train.word
    sizes = sorted(len(s.encode("utf-8")) for s in t["text"].to_pylist())
    assert sizes == [26989, 203886]  # the files' sizes in SOURCES.md: each whole file is one document


def test_lee_corpus_has_a_real_latin1_byte(shared_data: Path) -> None:
    lee = shared_data / "gensim-lee-corpus/lee.cor"
    with pytest.raises(DataError, match=r"lee.cor: invalid UTF-8 at byte offset 20357 \(b'\\xa33"):
        _read(train=str(lee))  # a Latin-1 pound sign in a UTF-8 file: strict mode says where
    t = _read(train=str(shared_data / "gensim-lee-corpus/lee_background.cor"), test=str(lee), errors="replace")
    assert _count(t, "test") == 50
    assert _count(t, "train") + _count(t, "valid") == 300  # 299 newlines; the last line has none
    last = t.filter(pa.compute.equal(t["split"], "test"))["text"][-1].as_py()
    assert last.endswith("Brown said today.")


def test_holdout_is_a_pure_function_of_seed_and_position() -> None:
    u = text.holdout_draw(0, np.arange(100_000))
    assert np.array_equal(u[5000:6000], text.holdout_draw(0, np.arange(5000, 6000)))
    assert u.min() >= 0.0 and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.01
    assert not np.array_equal(u, text.holdout_draw(1, np.arange(100_000)))


def test_invalid_utf8_names_file_and_offset(tmp_path: Path) -> None:
    f = tmp_path / "bad.txt"
    f.write_bytes(b"good line\nsecond \xff line\n")
    with pytest.raises(DataError, match=r"bad.txt: invalid UTF-8 at byte offset 17 .*corpus.text.errors: replace"):
        _read(train=str(f))
    t = _read(train=str(f), errors="replace", holdout=0.0, valid=str(f), test=str(f))
    assert "second \ufffd line" in t["text"].to_pylist()


def test_invalid_utf8_offset_is_exact_across_read_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text, "CHUNK_BYTES", 7)  # many slices, and lines longer than a slice
    f = tmp_path / "bad.txt"
    data = b"alpha beta gamma\n\xc3\xa9t\xc3\xa9\nlonger line here \xc3 broken\n"
    f.write_bytes(data)
    bad_at = data.index(b"\xc3 ")
    with pytest.raises(DataError, match=f"byte offset {bad_at} "):
        list(text.iter_lines(f))
    lines = [line for _, line in text.iter_lines(f, errors="replace")]
    assert lines == ["alpha beta gamma", "été", "longer line here \ufffd broken"]


def test_empty_corpus_and_missing_splits_are_clear_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n")
    with pytest.raises(DataError, match="produced no documents; check its path"):
        write_documents(text.read(TextParams(train=str(empty))), tmp_path / "docs", "source 'text'")
    one = tmp_path / "one.txt"
    one.write_text("only one document\n")
    with pytest.raises(DataError, match=r"no documents for split\(s\) valid, test"):
        write_documents(text.read(TextParams(train=str(one), holdout=0.0)), tmp_path / "docs", "source 'text'")
    assert not (tmp_path / "docs").exists()  # nothing half-written
    with pytest.raises(DataError, match="no such file or directory"):
        _read(train=str(tmp_path / "missing.txt"))
