"""The plain-text source on the real corpora in ../shared/data, and its errors."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from bench.harness import copy_repo, run, section, tool_env, write_params
from pipeline.corpus import write_documents
from pipeline.errors import DataError
from pipeline.sources import text


def _read(**kw: object) -> pa.Table:
    return pa.concat_tables(text.read(section("corpus.text", **kw)))


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
    # holdout 0: two documents would otherwise be held out by characters (below)
    t = _read(train=str(shared_data / "nlptutorial-wiki-en"), glob="*.word", unit="file", holdout=0.0)
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
        write_documents(text.read(section("corpus.text", train=str(empty))), tmp_path / "docs", "source 'text'")
    one = tmp_path / "one.txt"
    one.write_text("only one document\n")
    with pytest.raises(DataError, match=r"no documents for split\(s\) valid, test \(read 1 document: train 1\)") as e:
        write_documents(
            text.read(section("corpus.text", train=str(one), holdout=0.0)), tmp_path / "docs", "source 'text'"
        )
    assert "--valid/--test" in str(e.value) and "raise corpus.text.holdout" in str(e.value)
    one.write_text("ab\n")  # by characters: one each for valid and test would leave none for train
    with pytest.raises(DataError, match=r"one.txt: 2 characters in 1 document are too few to hold out valid and test"):
        write_documents(text.read(section("corpus.text", train=str(one))), tmp_path / "docs", "source 'text'")
    assert not (tmp_path / "docs").exists()  # nothing half-written
    with pytest.raises(DataError, match="no such file or directory"):
        _read(train=str(tmp_path / "missing.txt"))


# --- holding out by characters ------------------------------------------------------------------

WORDS = ["the", "river", "was", "cold", "and", "grey,", "naïve", "light", "fell.", "on", "a", "stone"]


def _prose(rng: random.Random, chars: int) -> str:
    """Words and single spaces, about ``chars`` characters, no newline."""
    out: list[str] = []
    size = 0
    while size < chars:
        out.append(rng.choice(WORDS))
        size += len(out[-1]) + 1
    return " ".join(out)


def _splits(t: pa.Table) -> dict[str, list[dict]]:
    rows = t.to_pylist()
    return {s: [r for r in rows if r["split"] == s] for s in ("train", "valid", "test")}


def _chars(rows: list[dict]) -> int:
    return sum(len(r["text"]) for r in rows)


def test_one_line_book_is_held_out_by_characters(tmp_path: Path) -> None:
    book = tmp_path / "book.txt"
    original = _prose(random.Random(0), 50_000)
    book.write_text(original + "\n", encoding="utf-8")
    t = _read(train=str(book))
    assert t.schema.metadata == {b"holdout_by": b"characters"}
    assert t["split"].to_pylist() == ["train", "valid", "test"]  # the one line, cut in three, in order
    by = _splits(t)
    total = len(original)
    for split, share in (("train", 0.90), ("valid", 0.05), ("test", 0.05)):
        assert abs(_chars(by[split]) / total - share) < 0.002, split  # a cut moves at most 200 characters
    assert "".join(t["text"].to_pylist()) == original  # every character kept, in order
    ranges = [sid.removeprefix(f"{book}:1") for sid in t["source_id"].to_pylist()]
    _, mid, hi = (int(r.strip("[]").split(":")[0]) for r in ranges)
    assert ranges == [f"[0:{mid}]", f"[{mid}:{hi}]", f"[{hi}:{total}]"]
    for cut in (mid, hi):  # at the start of a word
        assert original[cut - 1] == " " and original[cut] != " "
    held = round(total * 0.05)
    assert 0 <= mid - (total - 2 * held) <= 201 and 0 <= hi - (total - held) <= 201  # a space within 200
    assert t.equals(_read(train=str(book)))  # deterministic


def test_five_lines_are_held_out_by_characters(tmp_path: Path) -> None:
    rng = random.Random(1)
    lines = [_prose(rng, 2_000) for _ in range(5)]
    five = tmp_path / "five.txt"
    five.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # The rule for many documents leaves a carved split empty here: that is why characters are used.
    assert not {"valid", "test"} <= set(text.holdout_splits(0, np.arange(5), 0.05, ["valid", "test"]))
    t = _read(train=str(five))
    splits = t["split"].to_pylist()
    assert splits == sorted(splits, key=["train", "valid", "test"].index) and set(splits) == {"train", "valid", "test"}
    by = _splits(t)
    total = sum(map(len, lines))
    assert abs(_chars(by["train"]) / total - 0.90) < 0.02 and abs(_chars(by["test"]) / total - 0.05) < 0.02
    # Each line's pieces, in order, give the line back; whole lines keep their plain source id.
    pieces: dict[int, list[str]] = {}
    for sid, piece in zip(t["source_id"].to_pylist(), t["text"].to_pylist()):
        pieces.setdefault(int(sid.removeprefix(f"{five}:").split("[")[0]), []).append(piece)
    assert {n: "".join(p) for n, p in pieces.items()} == dict(enumerate(lines, 1))
    assert t["source_id"].to_pylist()[:4] == [f"{five}:{n}" for n in range(1, 5)]
    assert t.equals(_read(train=str(five)))


def test_folder_of_few_files_is_cut_across_files(tmp_path: Path) -> None:
    rng = random.Random(2)
    folder = tmp_path / "books"
    folder.mkdir()
    bodies = [_prose(rng, 6_000) + "\n", _prose(rng, 1_500) + "\n"]
    for i, body in enumerate(bodies):
        (folder / f"{i}.txt").write_text(body, encoding="utf-8")
    t = _read(train=str(folder), unit="file", holdout=0.1)
    by = _splits(t)
    assert by["train"][0]["source_id"] == str(folder / "0.txt")  # a whole file keeps its id
    assert all(r["source_id"].startswith(str(folder / "1.txt") + "[") for r in by["valid"] + by["test"])
    assert "".join(t["text"].to_pylist()) == "".join(bodies)


def test_many_documents_keep_the_document_rule(tmp_path: Path) -> None:
    rng = random.Random(3)
    lines = [_prose(rng, rng.randint(5, 80)) for _ in range(2_000)]
    f = tmp_path / "many.txt"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    t = _read(train=str(f))
    assert t.schema.metadata is None  # nothing added: the tables are the ones this source always wrote
    expect = text.holdout_splits(0, np.arange(2_000), 0.05, ["valid", "test"])
    assert t["split"].to_pylist() == expect.tolist()
    assert t["text"].to_pylist() == lines
    assert t["source_id"].to_pylist() == [f"{f}:{n}" for n in range(1, 2_001)]


def test_text_without_spaces_is_cut_exactly(tmp_path: Path) -> None:
    rng = random.Random(4)
    han = [chr(c) for c in range(0x4E00, 0x4E00 + 400)]
    poem = "".join(rng.choice(han) + ("，" if i % 7 == 6 else "。" if i % 29 == 28 else "") for i in range(18_000))
    f = tmp_path / "poems.txt"
    f.write_text(poem + "\n", encoding="utf-8")
    t = _read(train=str(f))
    held = round(len(poem) * 0.05)
    assert [len(x) for x in t["text"].to_pylist()] == [len(poem) - 2 * held, held, held]
    assert "".join(t["text"].to_pylist()) == poem


def test_given_valid_file_holds_out_only_test(tmp_path: Path) -> None:
    rng = random.Random(5)
    book, valid = tmp_path / "book.txt", tmp_path / "valid.txt"
    original = _prose(rng, 20_000)
    book.write_text(original + "\n", encoding="utf-8")
    valid.write_text("a valid line\nand another\n", encoding="utf-8")
    t = _read(train=str(book), valid=str(valid))
    by = _splits(t)
    assert [r["source_id"] for r in by["valid"]] == [f"{valid}:1", f"{valid}:2"]  # the file, nothing carved
    assert len(by["train"]) == len(by["test"]) == 1
    assert abs(_chars(by["test"]) / len(original) - 0.05) < 0.01
    assert by["train"][0]["text"] + by["test"][0]["text"] == original
    assert t["split"].to_pylist() == ["train", "test", "valid", "valid"]  # the source's order: train file, then files


def test_word_cut_moves_forward_to_whitespace_within_the_window() -> None:
    s = "aaaa bbbb   cccc"
    assert text.word_cut(s, 6, len(s)) == 12  # inside "bbbb": past the run of spaces that follows
    assert text.word_cut(s, 5, len(s)) == 5  # already at a word
    assert text.word_cut(s, 9, len(s)) == 12  # on the run
    assert text.word_cut(s, 6, 10) == 6  # the run ends after the limit: exact
    far = "x" * 500 + " y"
    assert text.word_cut(far, 10, len(far)) == 10  # no whitespace within 200 characters: exact


@pytest.mark.slow
def test_corpus_stage_on_a_one_line_book(tmp_path: Path) -> None:
    """The stage itself, as dvc runs it: its metrics say how the splits were made."""
    repo = copy_repo(tmp_path / "repo")
    book = tmp_path / "book.txt"
    book.write_text(_prose(random.Random(6), 30_000), encoding="utf-8")  # no newline at all
    write_params(repo / "params.yaml", {"corpus": {"source": "text", "text": {"train": str(book)}}})
    env = tool_env(PREFECT_HOME=str(repo / ".prefect"))
    run(repo, sys.executable, "-m", "pipeline.corpus", env=env, timeout=120)
    metrics = json.loads((repo / "data/metrics/corpus.json").read_text())
    assert metrics["source"] == "text" and metrics["holdout_by"] == "characters"
    splits = metrics["splits"]
    assert {s: v["docs"] for s, v in splits.items()} == {"train": 1, "valid": 1, "test": 1}
    total = sum(v["chars"] for v in splits.values())
    assert total == len(book.read_text(encoding="utf-8"))
    assert abs(splits["valid"]["chars"] / total - 0.05) < 0.01 and abs(splits["train"]["chars"] / total - 0.9) < 0.01


def test_a_byte_order_mark_is_not_text(tmp_path: Path) -> None:
    """Windows editors save UTF-8 with a BOM and CRLF: neither reaches the documents."""
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufeffFirst line.\r\nSecond line.\r\n".encode())
    assert [line for _, line in text.iter_lines(bom)] == ["First line.", "Second line."]
    whole = tmp_path / "docs"
    whole.mkdir()
    (whole / "a.txt").write_bytes("\ufeffOne document.\n".encode())
    p = section("corpus.text", train=str(whole), unit="file", valid=str(whole), test=str(whole))
    assert [doc for _, doc in text.iter_documents(whole, p)] == ["One document.\n"]
