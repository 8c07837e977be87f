"""Tokenizers against the ``re.findall`` reference on real text, and the tokenize stage."""

from __future__ import annotations

import bz2
import html
import re
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.harness import load_params as raw_params
from bench.harness import merge, section
from pipeline.errors import DataError, ParamsError
from pipeline.io import sha256_file
from pipeline.params import validate
from pipeline.shards import ShardWriter
from pipeline.tokenize import (
    CJK,
    PRESETS,
    SEP,
    SINGLE,
    WORD,
    WordTokenizer,
    char_tokens,
    resolve_pattern,
    tokenize_table,
    unicode_classes,
    unicode_regex,
)
from pipeline.vocab import TOKENS_REQUIRED

WORD_PATTERN = section("imdb_data.tokenize").pattern  # Abrahams et al.'s rule


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


# --- presets and the unicode rule -------------------------------------------------------------


def bgwiki_lines(shared_data: Path) -> list[str]:
    """The article texts (wiki markup) of the Bulgarian dump fragment, which is UTF-16 XML."""
    xml = bz2.decompress((shared_data / "wikipedia-xml/bgwiki-latest-pages-articles-shortened.xml.bz2").read_bytes())
    texts = re.findall(r"<text[^>]*>(.*?)</text>", xml.decode("utf-16"), re.S)
    return "\n".join(html.unescape(t) for t in texts).split("\n")


def unicode_reference(lines: list[str], lowercase: bool) -> list[list[str]]:
    """``re.findall(unicode_regex(), line)``; lowercase as the kernel documents it (Arrow's utf8_lower)."""
    rx = re.compile(unicode_regex())
    out = [rx.findall(line) for line in lines]
    if not lowercase:
        return out
    flat = pc.utf8_lower(pa.array([t for tokens in out for t in tokens], pa.string())).to_pylist()
    it = iter(flat)
    return [[next(it) for _ in tokens] for tokens in out]


def test_ascii_preset_is_the_grammar_default(shared_data: Path) -> None:
    default = raw_params()["tokenize"]["word"]["pattern"]
    assert resolve_pattern("ascii") == default  # params.yaml could name the preset and keep its tokens
    lines = real_lines(shared_data)
    assert WordTokenizer("ascii")(pa.array(lines)).to_pylist() == reference(default, lines)


@pytest.mark.parametrize("lowercase", [False, True])
def test_unicode_kernel_equals_its_regex_on_real_text(shared_data: Path, lowercase: bool) -> None:
    bg = bgwiki_lines(shared_data)
    lines = real_lines(shared_data)[:20_000] + bg
    tok = WordTokenizer("unicode", lowercase)
    assert tok.vectorized
    got = tok(pa.array(lines)).to_pylist()
    assert got == unicode_reference(lines, lowercase)
    assert sum(map(len, got)) > 400_000 and sum(map(len, got[-len(bg) :])) > 40_000


def test_unicode_rule_on_scripts() -> None:
    tok = WordTokenizer("unicode", lowercase=False)
    lines = [
        "naïve café",
        "我爱北京。",
        "Привет, мир!",
        "\ufeffשָׁלוֹם नमस्ते ١٢٣\r\n",
        "<unk> @-@ x<y>z <a b>",
        "👨\u200d👩\u200d👧 👍🏽",
        "コーヒー 한국어",
    ]
    assert tok(pa.array(lines)).to_pylist() == [
        ["naïve", "café"],
        ["我", "爱", "北", "京", "。"],
        ["Привет", ",", "мир", "!"],
        ["שָׁלוֹם", "नमस्ते", "١٢٣"],  # points and vowel signs stay inside words; BOM and CR separate
        ["<unk>", "@", "-", "@", "x", "<y>", "z", "<", "a", "b", ">"],
        ["👨", "👩", "👧", "👍", "🏽"],  # ZWJ separates; symbols are one character each
        ["コ", "ー", "ヒ", "ー", "한", "국", "어"],
    ]
    assert WordTokenizer("unicode")(pa.array(["ÉCOLE İstanbul"])).to_pylist() == [["école", "istanbul"]]


def test_unicode_classes() -> None:
    table = unicode_classes()
    want = {"a": WORD, "я": WORD, "_": WORD, "\u0301": WORD, "١": WORD, "我": CJK, "ア": CJK, "ｱ": CJK}
    want |= {"한": CJK, "\U00020000": CJK, " ": SEP, "\u3000": SEP, "\ufeff": SEP, "\u200d": SEP, "\x00": SEP}
    want |= {"。": SINGLE, "—": SINGLE, "😀": SINGLE, "<": SINGLE, "\U000e0100": WORD, "\U00050000": SINGLE}
    assert {c: int(table[ord(c)]) for c in want} == want
    assert all(table[c] == SEP for c in range(0x110000) if chr(c).isspace())
    assert all(table[c] != WORD for c in range(0x110000) if unicodedata.category(chr(c))[0] in "PSZC" and c != 95)


MIXED = [
    "naïve", "Straße", "Привет", "мир", "我", "爱", "北京", "。", "，", "שָׁלוֹם", "नमस्ते", "١٢٣", "42", "😀",
    "👨\u200d👩", "👍🏽", "\ufeff", "\r\n", "\n", "\t", " ", "\u00a0", "\u2028", "<unk>", "<", ">", "@-@", "_",
    "İ", "\u0301", "ｶﾞ", "\x00", ".", "ǅ",
]  # fmt: skip
pieces = st.one_of(st.sampled_from(MIXED), st.characters(exclude_categories=("Cs",)))
documents = st.lists(pieces, max_size=30).map("".join)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.lists(documents, min_size=1, max_size=8), st.booleans(), st.booleans())
def test_unicode_kernel_equals_its_regex_on_mixed_scripts(lines: list[str], lowercase: bool, slice_: bool) -> None:
    arr = pa.array(["junk ü"] + lines)[1:] if slice_ else pa.array(lines)  # a slice: offsets into the buffers
    assert WordTokenizer("unicode", lowercase)(arr).to_pylist() == unicode_reference(lines, lowercase)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=24), st.integers(0, 24))
def test_unicode_kernel_survives_corrupt_utf8(raw: bytes, cut: int) -> None:
    # Parquet strings are not validated on read: bytes that are no UTF-8 still give a valid list array.
    cut = min(cut, len(raw))
    offsets = pa.py_buffer(np.array([0, cut, len(raw)], np.int32))
    out = WordTokenizer("unicode", lowercase=False)(pa.StringArray.from_buffers(2, offsets, pa.py_buffer(raw)))
    out.validate()
    assert len(out) == 2 and len(b"".join(t.as_buffer() for t in out.values)) <= len(raw)


def test_preset_names_pass_params_validation() -> None:
    for name in PRESETS:
        params = validate(merge(raw_params(), {"tokenize": {"word": {"pattern": name}}}))
        assert params.tokenize.word.pattern == name  # stored by name, resolved by WordTokenizer
        assert WordTokenizer(params.tokenize.word.pattern)(pa.array(["Naïve, x."])).to_pylist()[0][-1] == "."
    # A bare name that is no preset is refused (as a regex it would only match itself); anything with
    # regex syntax is a regex, accepted when it compiles and cannot match the empty string.
    with pytest.raises(ParamsError, match=r"tokenize.word.pattern: unknown preset 'unicod'.*ascii, unicode"):
        validate(merge(raw_params(), {"tokenize": {"word": {"pattern": "unicod"}}}))
    assert validate(merge(raw_params(), {"tokenize": {"word": {"pattern": "unicode+"}}})).tokenize.word.pattern
    with pytest.raises(ParamsError, match=r"not a valid regular expression .* nor a preset \(ascii, unicode\)"):
        validate(merge(raw_params(), {"tokenize": {"word": {"pattern": "[unicode"}}}))


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
