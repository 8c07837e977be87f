"""Tokenizers against the ``re.findall`` reference on real text, and the tokenize stage."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import DataError
from pipeline.io import sha256_file
from pipeline.params import WordTokenizeParams
from pipeline.shards import ShardWriter
from pipeline.tokenize import WordTokenizer, char_tokens, tokenize_table
from pipeline.vocab import TOKENS_REQUIRED

WORD_PATTERN = WordTokenizeParams().pattern  # the default word pattern


def reference(pattern: str, lines: list[str], lowercase: bool = True) -> list[list[str]]:
    """The loop of Abrahams, Hafner, Erwitt & Scarpinelli, *TensorFlow for Machine Intelligence* (Bleeding Edge
    Press, 2016), chapter 6: findall on each line, then lowercase each token."""
    rx = re.compile(pattern)
    return [[t.lower() if lowercase else t for t in rx.findall(line)] for line in lines]


def real_lines(shared_data: Path) -> list[str]:
    files = [
        "wikitext-2/valid.txt",
        "wikitext-2/test.txt",
        "nlptutorial-wiki-en/wiki-en-train.txt",
        "gensim-lee-corpus/lee_background.cor",
        "gensim-lee-corpus/lee.cor",
    ]
    out: list[str] = []
    for f in files:
        out += (shared_data / f).read_bytes().decode("utf-8", errors="replace").split("\n")
    return out


@pytest.mark.parametrize("pattern", [WORD_PATTERN, r"[A-Za-z]+|[-!?.:;,()]", r"[a-z0-9']+|[.]", r"[A-Za-z]+"])
@pytest.mark.parametrize("lowercase", [True, False])
def test_fast_path_equals_findall_on_real_text(shared_data: Path, pattern: str, lowercase: bool) -> None:
    lines = real_lines(shared_data)
    tok = WordTokenizer(pattern, lowercase)
    assert tok.vectorized
    got = tok(pa.array(lines)).to_pylist()
    assert got == reference(pattern, lines, lowercase)
    assert sum(map(len, got)) > 400_000  # a real workload, not a toy


def test_fast_path_on_sliced_and_awkward_input() -> None:
    lines = ["", "ÉCOLE naïve café—Straße!", None, "a", "ab,cd", "(x)", "   ", "İstanbul K"]
    arr = pa.array(["junk"] + lines)[1:]  # a slice: non-zero offset into the buffers
    tok = WordTokenizer(WORD_PATTERN)
    assert tok(arr).to_pylist() == reference(WORD_PATTERN, [s or "" for s in lines])


@pytest.mark.parametrize("pattern", [r"\w+|[^\w\s]", r"[^\W\d_]+", r"[a-z]+(?:'[a-z]+)?"])
def test_other_patterns_fall_back_to_python_re(pattern: str) -> None:
    lines = ["Héllo, wörld! 42 don't", "Привет мир."]
    tok = WordTokenizer(pattern)
    assert not tok.vectorized
    assert tok(pa.array(lines)).to_pylist() == reference(pattern, lines)


def test_char_tokens_are_code_points() -> None:
    lines = ["България: Пловдив", "", "a😀b", "MiXeD"]
    assert char_tokens(pa.array(lines)).to_pylist() == [list(s) for s in lines]
    assert char_tokens(pa.array(lines), lowercase=True).to_pylist() == [list(s.lower()) for s in lines]


def _docs(folder: Path, n: int, label: bool = False) -> Path:
    folder.mkdir(parents=True)
    fields = [("doc_id", pa.int64()), ("split", pa.string()), ("text", pa.string())] + (
        [("label", pa.string())] if label else []
    )
    with ShardWriter(folder, pa.schema(fields), rows_per_shard=70) as w:
        cols = {
            "doc_id": list(range(n)),
            "split": ["train" if i % 5 else "test" for i in range(n)],
            "text": [f"Document {i}: the Cat sat, on mat {i % 7}!" for i in range(n)],
        }
        if label:
            cols["label"] = ["pos" if i % 2 else "neg" for i in range(n)]
        w.write(pa.table(cols, schema=pa.schema(fields)))
    return folder


def test_stage_writes_bounded_shards_and_keeps_labels(tmp_path: Path) -> None:
    docs = _docs(tmp_path / "docs", 250, label=True)
    rows = tokenize_table(docs, tmp_path / "tokens", WordTokenizer(WORD_PATTERN), shard_rows=100)
    files = sorted((tmp_path / "tokens").glob("*.parquet"))
    assert rows == 250 and [pq.read_metadata(f).num_rows for f in files] == [100, 100, 50]
    t = pq.read_table(tmp_path / "tokens")
    assert t.column_names == ["doc_id", "split", "tokens", "label"]
    assert t["tokens"][3].as_py() == ["document", ":", "the", "cat", "sat", ",", "on", "mat", "!"]
    assert t["label"][3].as_py() == "pos" and t["doc_id"].to_pylist() == list(range(250))
    assert pq.read_metadata(files[0]).row_group(0).column(0).compression == "ZSTD"
    for name, types in TOKENS_REQUIRED.items():
        assert t.schema.field(name).type in types


def test_output_bytes_do_not_depend_on_threads(tmp_path: Path) -> None:
    docs = _docs(tmp_path / "docs", 3000)
    for workers in (1, 2):
        tokenize_table(docs, tmp_path / f"t{workers}", WordTokenizer(WORD_PATTERN), shard_rows=1000, workers=workers)
    a = [sha256_file(f) for f in sorted((tmp_path / "t1").glob("*"))]
    b = [sha256_file(f) for f in sorted((tmp_path / "t2").glob("*"))]
    assert a == b and len(a) == 3


def test_wrong_schema_names_file_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "docs"
    bad.mkdir()
    pq.write_table(
        pa.table({"doc_id": pa.array([1], pa.int32()), "split": ["train"], "body": ["x"]}), bad / "part-00000.parquet"
    )
    with pytest.raises(DataError) as e:
        tokenize_table(bad, tmp_path / "tokens", WordTokenizer(WORD_PATTERN), shard_rows=10)
    msg = str(e.value)
    assert "part-00000.parquet: not a valid document table" in msg
    assert "column 'doc_id' has type int32, expected int64" in msg and "missing column 'text'" in msg
    assert not (tmp_path / "tokens").exists()
    with pytest.raises(DataError, match="document table not found; run the stage"):
        tokenize_table(tmp_path / "nowhere", tmp_path / "tokens", WordTokenizer(WORD_PATTERN), shard_rows=10)
