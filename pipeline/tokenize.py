"""Stage ``tokenize``: document table → token shards, at word or character level.

    python -m pipeline.tokenize --level word

Writes ``data/tokens/<level>/part-*.parquet`` with columns ``doc_id``,
``split``, ``tokens`` (list of strings) and ``label`` when the documents have
one. Documents are streamed in batches, so memory stays bounded whatever the
corpus size.

Word level follows Abrahams, Hafner, Erwitt & Scarpinelli, *TensorFlow for
Machine Intelligence* (Bleeding Edge Press, 2016), chapter 6:
``re.findall(pattern, text)``, each token then lowercased. ``tokenize.word.pattern``
is a regular expression or the name of a preset (``PRESETS``):

- ``ascii``: the book's letters-and-punctuation rule, plus the "-" and ";" that
  the grammar emits. Everything outside ASCII is dropped ("naïve" -> "na", "ve").
- ``unicode``: letters, combining marks, digits and "_" of any script make words;
  each CJK ideograph, kana and hangul syllable is a token of its own; any other
  character (punctuation, symbols, emoji, unassigned) is a token of its own;
  whitespace, control and format characters (the BOM, ZWJ) separate tokens.
  ``<word>`` stays one token, so the ``<unk>`` of pre-tokenized corpora survives.
  The classes come from this Python's ``unicodedata`` (so a Python with a newer
  Unicode version may class newly assigned characters differently), and
  ``unicode_regex()`` states the same rule as a ``re`` pattern.

A pattern of the shape ``[W]+|[P]`` (or ``[W]+``) whose classes hold only ASCII
characters runs as a vectorized byte-table kernel over the whole batch, and the
``unicode`` preset as a kernel that decodes the UTF-8 in numpy; both are
token-for-token equal to ``re.findall`` with their pattern (which remains the
path for any other pattern). Character level splits on UTF-8 code points, sharing the text's bytes
instead of copying them.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import docs, paths, stage
from pipeline.codedeps import code_deps
from pipeline.io import atomic_dir
from pipeline.params import CharTokenizeParams, WordTokenizeParams, load_params
from pipeline.progress import Progress, parquet_rows
from pipeline.shards import ShardWriter, shard_files
from pipeline.threads import ordered_map

logger = logging.getLogger(f"rnnlab.{__name__}")

TOKENS_SCHEMA = pa.schema([("doc_id", pa.int64()), ("split", pa.string()), ("tokens", pa.list_(pa.string()))])
BATCH_ROWS = 1024  # documents per tokenizer call; small batches stay in cache

_FAST_SHAPE = re.compile(r"\[(?P<word>[^\]^][^\]]*)\]\+(?:\|\[(?P<punct>[^\]^][^\]]*)\])?")
_ESCAPED_CLASS = re.compile(r"\\[A-Za-z0-9]")  # \w, \d, \s, \pL, ...: not plain ASCII sets


def _ascii_members(body: str) -> np.ndarray | None:
    """Byte mask of the ASCII characters a class body matches, or None if it may match more."""
    if not body.isascii() or _ESCAPED_CLASS.search(body):
        return None
    cls = re.compile(f"[{body}]")
    return np.array([cls.fullmatch(chr(b)) is not None for b in range(256)]) & (np.arange(256) < 128)


# --- the unicode rule ---------------------------------------------------------------------

SEP, WORD, SINGLE, CJK = 0, 1, 2, 3  # code-point classes; SINGLE and CJK are each a token of one character

# Planes with assigned characters other than private use (15, 16): the rest is unassigned, hence SINGLE.
_PLANES = ((0x0000, 0x40000), (0xE0000, 0xF0000))
# Blocks whose letters are tokens of one character: CJK symbols (々, 〇), hiragana, katakana and its
# phonetic extensions, CJK unified ideographs (extension A, the main block), hangul syllables, CJK
# compatibility ideographs, halfwidth katakana, the kana supplements, and planes 2 and 3, which hold
# only CJK ideographs (extensions B onwards and the compatibility supplement, present and future).
_CJK_RANGES = (
    (0x3000, 0x3100),
    (0x31F0, 0x3200),
    (0x3400, 0x4DC0),
    (0x4E00, 0xA000),
    (0xAC00, 0xD7B0),
    (0xF900, 0xFB00),
    (0xFF66, 0xFFA0),
    (0x1AFF0, 0x1B170),
    (0x20000, 0x40000),
)


@functools.cache
def unicode_classes() -> np.ndarray:
    """Class of every code point (``SEP``, ``WORD``, ``SINGLE`` or ``CJK``), as a uint8 table of 0x110000.

    WORD: categories L*, M* (combining marks stay inside their word) and N*, and "_"; CJK: those of
    them in the CJK blocks; SEP: ``str.isspace`` characters, Cc and Cf; SINGLE: everything else.
    Built once per process from ``unicodedata``.
    """
    first = {"L": WORD, "M": WORD, "N": WORD}
    sep = {"Cc", "Cf", "Zs", "Zl", "Zp"}  # every str.isspace character is Zs, Zl, Zp or Cc
    table = np.full(0x110000, SINGLE, np.uint8)
    for lo, hi in _PLANES:
        cats = map(unicodedata.category, map(chr, range(lo, hi)))
        table[lo:hi] = np.frombuffer(bytes(SEP if c in sep else first.get(c[0], SINGLE) for c in cats), np.uint8)
    table[ord("_")] = WORD
    assert all(table[c] == SEP for c in range(0x3001) if chr(c).isspace())
    for lo, hi in _CJK_RANGES:
        block = table[lo:hi]
        block[block == WORD] = CJK
    return table


def _class_ranges(table: np.ndarray, classes: tuple[int, ...], lo: int, hi: int) -> str:
    """The code points in [lo, hi) of ``classes``, as the body of a ``re`` character class of ranges."""
    mask = np.isin(table[lo:hi], classes).astype(np.int8)
    edges = np.diff(mask, prepend=0, append=0)
    body = []
    for first, end in zip(np.flatnonzero(edges == 1) + lo, np.flatnonzero(edges == -1) + lo, strict=True):
        body.append(f"\\U{first:08x}" if end - first == 1 else f"\\U{first:08x}-\\U{end - 1:08x}")
    return "".join(body)


@functools.cache
def unicode_regex() -> str:
    """The ``unicode`` preset as a ``re`` pattern: ``<W+>|W+|[CS]``, from the same table as the kernel.

    Each class is split at U+FFFF, and its astral half sits behind a one-range lookahead: ``re``
    tests a class of BMP characters against a bitmap, but one with astral ranges range by range
    (a ten times slower loop on Bulgarian text, for the same matches).
    """
    table = unicode_classes()

    def halves(classes: tuple[int, ...]) -> tuple[str, str]:
        return _class_ranges(table, classes, 0, 0x10000), _class_ranges(table, classes, 0x10000, 0x110000)

    astral = r"\U00010000-\U0010ffff"
    w_bmp, w_astral = halves((WORD,))
    ws_bmp, ws_astral = halves((WORD, SEP))
    word = f"(?:[{w_bmp}]|(?=[{astral}])[{w_astral}])"
    single = f"(?:[^{ws_bmp}{astral}]|(?=[{astral}])[^{ws_astral}\\x00-\\uffff])"  # neither WORD nor SEP
    return f"<{word}+>|{word}+|{single}"


# A preset is a regular expression, or (unicode) the function that builds one from unicodedata.
PRESETS: dict[str, str | Callable[[], str]] = {
    "ascii": r"[A-Za-z]+|[-!?.:;,()]",
    "unicode": unicode_regex,
}


def resolve_pattern(pattern: str) -> str:
    """The regular expression a ``tokenize.word.pattern`` value stands for: a preset's, or the value itself."""
    rule = PRESETS.get(pattern, pattern)
    return rule() if callable(rule) else rule


class WordTokenizer:
    """``tokens = [t.lower() for t in re.findall(pattern, text)]``, over an Arrow string array.

    ``pattern`` is a regular expression or a preset name (``PRESETS``). Lowercasing is Python's
    ``str.lower`` on the ``re`` path; on the unicode kernel it is Arrow's ``utf8_lower`` (Unicode
    simple case mapping, one code point to one: "İ" -> "i", where ``str.lower`` gives "i̇").
    """

    def __init__(self, pattern: str, lowercase: bool = True):
        self.pattern = pattern
        self.lowercase = lowercase
        self._unicode = PRESETS.get(pattern) is unicode_regex
        self._table = unicode_classes() if self._unicode else None  # built here, not in a worker thread
        rule = None if self._unicode else resolve_pattern(pattern)
        self._regex = None if rule is None else re.compile(rule)
        self._classes: np.ndarray | None = None  # byte -> 0 other, 1 word, 2 single-char token
        m = None if rule is None else _FAST_SHAPE.fullmatch(rule)
        if m:
            word = _ascii_members(m["word"])
            single = _ascii_members(m["punct"]) if m["punct"] else np.zeros(256, bool)
            if word is not None and single is not None:
                self._classes = np.where(word, 1, np.where(single, 2, 0)).astype(np.uint8)
        self._lower = np.arange(256, dtype=np.uint8)
        if lowercase:
            self._lower[ord("A") : ord("Z") + 1] += 32

    @property
    def vectorized(self) -> bool:
        return self._unicode or self._classes is not None

    def __call__(self, texts: pa.Array) -> pa.ListArray:
        texts = pc.fill_null(texts.cast(pa.string()), "")
        if self._unicode:
            return self._code_points(texts)
        if self._classes is None:
            return self._python(texts)
        return self._bytes(texts)

    def _python(self, texts: pa.Array) -> pa.ListArray:
        lower = str.lower if self.lowercase else (lambda t: t)
        out = [[lower(t) for t in self._regex.findall(s)] for s in texts.to_pylist()]
        return pa.array(out, pa.list_(pa.string()))

    def _bytes(self, texts: pa.StringArray) -> pa.ListArray:
        offsets, data = _string_buffers(texts)
        n = len(data)
        # np.take and np.compress, not fancy or boolean indexing: ~1.5x faster on byte arrays.
        cls = np.take(self._classes, data)
        word = cls == 1
        # A word byte continues a token when the byte before it is a word byte of the same document.
        cont = np.zeros(n, bool)
        np.logical_and(word[1:], word[:-1], out=cont[1:])
        inner = offsets[1:-1]
        cont[inner[inner < n]] = False
        keep = cls != 0
        starts = np.flatnonzero(keep & ~cont)
        ends = np.zeros(n, bool)
        ends[:-1] = cont[1:]
        ends = np.flatnonzero(keep & ~ends)
        token_offsets = np.zeros(len(starts) + 1, np.int32)
        np.cumsum(ends - starts + 1, out=token_offsets[1:])
        chars = np.take(self._lower, np.compress(keep, data))
        values = pa.StringArray.from_buffers(len(starts), pa.py_buffer(token_offsets), pa.py_buffer(chars))
        list_offsets = np.searchsorted(starts, offsets).astype(np.int32)
        return pa.ListArray.from_arrays(pa.array(list_offsets), values)

    def _code_points(self, texts: pa.StringArray) -> pa.ListArray:
        """The unicode rule, vectorized: give each byte its character's class, then cut tokens at class changes."""
        offsets, data = _string_buffers(texts)
        cls = _byte_classes(data, self._table)
        keep = cls != SEP
        starts, ends = _unicode_bounds(data, cls, keep, offsets)
        chars = np.compress(keep, data)  # the bytes of the tokens, which cover them all
        ascii = len(chars) == 0 or int(chars.max()) < 0x80
        if self.lowercase and ascii:  # the byte table, as on the ASCII fast path
            chars = np.take(self._lower, chars)
        token_offsets = np.zeros(len(starts) + 1, np.int32)
        np.cumsum(ends - starts + 1, out=token_offsets[1:])
        values = pa.StringArray.from_buffers(len(starts), pa.py_buffer(token_offsets), pa.py_buffer(chars))
        if self.lowercase and not ascii:
            values = pc.utf8_lower(values)
        list_offsets = np.searchsorted(starts, offsets).astype(np.int32)
        return pa.ListArray.from_arrays(pa.array(list_offsets), values)


_INNER = 4  # byte class: a continuation byte of a SINGLE or CJK character
_INNER_OF = np.array([SEP, WORD, _INNER, _INNER], np.uint8)  # continuation class, by character class
_SINGLE_OF = np.array([SEP, WORD, SINGLE, SINGLE], np.uint8)  # CJK and SINGLE cut alike


def _byte_classes(data: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Class of each byte of valid UTF-8 ``data``: its character's (SEP, WORD, SINGLE), or _INNER.

    Only multi-byte characters are decoded; ASCII bytes take their class straight from the table.
    """
    # A byte read as a character of its own: right for ASCII; continuation bytes (0x80-0xBF) and the
    # first bytes of multi-byte characters are overwritten below, once their character is decoded.
    by_byte = _SINGLE_OF[table[:256]]
    cls = np.take(by_byte, data)
    lead = np.flatnonzero(data >= 0xC0)  # first bytes of multi-byte characters
    if len(lead) == 0:
        return cls
    b0 = np.take(data, lead)
    length = (b0 >= 0xE0).astype(np.uint8)
    length += b0 >= 0xF0
    length += 2
    longest = int(length.max())
    n = len(data)

    def following(k: int, lead: np.ndarray) -> np.ndarray:
        """Index of each character's k-th byte; clipped, as a character cut short by corrupt data may end early."""
        index = lead + k
        np.minimum(index[-3:], n - 1, out=index[-3:])  # only the last three characters can reach the end
        return index

    cp = (b0 & (0x3F >> (length - 1))).astype(np.int32) << 6  # the lead byte's payload bits
    cp |= np.take(data, following(1, lead)) & 0x3F
    for k in range(2, longest):
        more = np.take(data, following(k, lead)) & 0x3F
        cp = np.where(length > k, (cp << 6) | more, cp)
    char_cls = np.take(table, cp, mode="clip")  # clip: beyond U+10FFFF (corrupt data) reads as SINGLE
    cls[lead] = np.minimum(char_cls, SINGLE)  # CJK and SINGLE cut alike
    inner = np.take(_INNER_OF, char_cls)
    cls[following(1, lead)] = inner
    for k in range(2, longest):
        sel = np.flatnonzero(length > k)
        cls[following(k, lead[sel])] = inner[sel]
    return cls


def _unicode_bounds(
    data: np.ndarray, cls: np.ndarray, keep: np.ndarray, doc_starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """First and last byte of every token of the unicode rule, in order; the tokens cover the ``keep`` bytes.

    A token is a run of WORD bytes, or one SINGLE byte with its _INNER bytes, or ``<`` WORD-run ``>``
    (what the regex's first alternative takes). Documents are boundaries: no token spans two.
    """
    n = len(cls)
    word = cls == WORD
    cont = np.zeros(n, bool)  # a byte whose token began before it
    np.logical_and(word[1:], word[:-1], out=cont[1:])
    between = doc_starts[1:-1]
    cont[between[between < n]] = False
    cont |= cls == _INNER  # the rest of a SINGLE character (no character spans two documents)
    # Only after a kept byte, which holds anyway in valid UTF-8: then even corrupt bytes each start
    # or continue a token, and the token bytes and the token lengths always agree.
    np.logical_and(cont[1:], keep[:-1], out=cont[1:])
    cont[:1] = False
    start = keep & ~cont
    end = np.zeros(n, bool)
    end[:-1] = cont[1:]
    end = keep & ~end
    opens = np.flatnonzero(data == ord("<"))
    opens = opens[cls[opens] == SINGLE]  # not a byte inside a (corrupt) character
    if len(opens):
        # "<", a word run and ">", all in one document, are one token: drop the bounds inside it.
        doc_end = doc_starts[np.searchsorted(doc_starts, opens, side="right")]
        run = opens + 1
        ok = run < doc_end
        ok[ok] = word[run[ok]]
        opens, run, doc_end = opens[ok], run[ok], doc_end[ok]
        ends_at = np.flatnonzero(end)
        last = ends_at[np.searchsorted(ends_at, run)]  # the run's last byte
        close = last + 1
        ok = close < doc_end
        ok[ok] = (data[close[ok]] == ord(">")) & (cls[close[ok]] == SINGLE)
        opens, run, last, close = opens[ok], run[ok], last[ok], close[ok]
        end[opens] = False
        start[run] = False
        end[last] = False
        start[close] = False
    return np.flatnonzero(start), np.flatnonzero(end)


def char_tokens(texts: pa.Array, lowercase: bool = False) -> pa.ListArray:
    """Split each string into its Unicode code points (one token per character)."""
    texts = pc.fill_null(texts.cast(pa.string()), "")
    if lowercase:
        texts = pc.utf8_lower(texts)
    offsets, data = _string_buffers(texts)
    # Every byte that is not a UTF-8 continuation byte (10xxxxxx) starts a character.
    starts = np.flatnonzero((data & 0xC0) != 0x80).astype(np.int32)
    value_offsets = np.append(starts, np.int32(len(data)))
    values = pa.StringArray.from_buffers(len(starts), pa.py_buffer(value_offsets), pa.py_buffer(data))
    list_offsets = np.searchsorted(starts, offsets).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(list_offsets), values)


def _string_buffers(texts: pa.StringArray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets from 0, UTF-8 bytes) of a string array, without copying the bytes."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    _, offset_buf, data_buf = texts.buffers()
    offsets = np.frombuffer(offset_buf, np.int32, len(texts) + 1, texts.offset * 4)
    if data_buf is None:  # every string empty
        return np.zeros(len(texts) + 1, np.int64), np.zeros(0, np.uint8)
    data = np.frombuffer(data_buf, np.uint8)[offsets[0] : offsets[-1]]
    return (offsets - offsets[0]).astype(np.int64), data


def tokenizer_for(level: str, cfg: WordTokenizeParams | CharTokenizeParams) -> Callable[[pa.Array], pa.ListArray]:
    if isinstance(cfg, WordTokenizeParams):
        return WordTokenizer(cfg.pattern, cfg.lowercase)
    return lambda texts: char_tokens(texts, cfg.lowercase)


def tokenize_table(
    docs_dir: Path,
    out_dir: Path,
    tokenize: Callable[[pa.Array], pa.ListArray],
    shard_rows: int,
    workers: int = 1,
    progress: str = "tokenize",
) -> int:
    """Tokenize every document into shards under ``out_dir``; return the number of documents.

    ``progress`` names the work in its progress (documents, out of the shards' row count).
    """
    has_label = "label" in docs.columns_of(docs_dir)
    schema = TOKENS_SCHEMA.append(pa.field("label", pa.string())) if has_label else TOKENS_SCHEMA
    columns = ["doc_id", "split", "text"] + (["label"] if has_label else [])

    def work(batch: pa.RecordBatch) -> pa.Table:
        table = pa.Table.from_batches([batch])
        tokens = tokenize(table["text"].combine_chunks())
        return table.drop_columns(["text"]).append_column("tokens", tokens)

    total = parquet_rows(shard_files(docs_dir, docs.DOC_TABLE))
    with (
        atomic_dir(out_dir) as tmp,
        ShardWriter(tmp, schema, shard_rows) as writer,
        Progress(progress, total, unit="documents", logger=logger) as shown,
    ):
        batches = docs.iter_docs(docs_dir, columns, batch_rows=BATCH_ROWS)
        for table in ordered_map(work, batches, workers=workers):
            writer.write(table)
            shown.update(table.num_rows)
        return writer.rows


def spec(level: str) -> stage.StageSpec:
    return stage.StageSpec(
        params=(f"tokenize.{level}",),
        deps=(
            *code_deps("pipeline.tokenize"),
            str(paths.DOCS),
        ),
        outs=(str(paths.tokens(level)),),
    )


def run(level: str, params_file: str, workers: int) -> None:
    cfg = load_params(spec(level).params, params_file)[f"tokenize.{level}"]
    tokenize_table(
        paths.DOCS, paths.tokens(level), tokenizer_for(level, cfg), cfg.shard_rows, workers, f"tokenize {level}"
    )


def main(argv: list[str] | None = None) -> int:
    p = stage.parser(__doc__, level=True)
    p.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="tokenizer threads; output is identical for any value (default: %(default)s)",
    )
    args = p.parse_args(argv)
    return stage.run(lambda: run(args.level, args.params, args.workers))


if __name__ == "__main__":
    raise SystemExit(main())
