"""Wikipedia XML dumps (seed 001): ``pages-articles*.xml.bz2`` → plain-prose documents.

    corpus:
      source: wikipedia
      wikipedia:
        url: https://dumps.wikimedia.org/simplewiki/latest/simplewiki-latest-pages-articles.xml.bz2

Reading. The dump (``.xml.bz2`` or plain ``.xml``; the format is sniffed from
its first bytes, not its name) streams through ``lxml.etree.iterparse`` on
``{*}page``. Decompression runs in a separate ``bzip2 -dc`` process when that
program exists (else in a Python thread: ``bz2`` releases the GIL), so it
overlaps with parsing and markup stripping on the other core. Bytes go to lxml
undecoded: the XML's own declaration or byte-order mark decides the encoding
(one real fixture is UTF-16LE). The parser never resolves entities or touches
the network. Each page element is cleared and its preceding siblings deleted,
so memory stays flat however large the dump.

Filter. Pages in ``namespaces`` (default: articles, ns 0) that are not
redirects, whose stripped text has at least ``min_chars`` characters.

Markup. A hand-written pass (``strip_markup``) turns wikitext into prose:
comments, ``<ref>``/``<math>``/``<gallery>``… with their content, nested
``{{templates}}`` and ``{| tables |}`` (one stack-based scan), File/Image/
Category and interlanguage links go; ``[[target|text]]`` → text,
``[url text]`` → text, bold/italic quotes and list markers go, headings stay
as lines, HTML entities are decoded. mwparserfromhell (0.7.2, C tokenizer) was
evaluated against it on the 106 articles (5.75 MB of wikitext) of the real enwiki
fragment (``bench/wikipedia.py --markup``): ``strip_code`` ran at 1.1-1.5 MB/s
and left 3 tables, 13 ``<ref``, 4 ``[[``, 1 ``{{``, 5 bold quotes and 911 ``thumb|``
captions behind; this pass runs at 41-45 MB/s and leaves none of them. A dump
reader bound by bz2 (23-30 MB/s) cannot afford a 1.5 MB/s stage, so the
hand-written pass it is; its cases are pinned by tests.

Multistream dumps (``…-multistream.xml.bz2`` with ``…-multistream-index.txt.bz2``)
are independent bz2 streams of ~100 pages each. ``stream_ranges`` yields their
byte ranges from the index and ``pages_in_range`` parses one range: a pure
function of (path, start, end, options), so a scheduler can fan ranges out
over workers. ``read`` walks them in order when ``index_url`` is set.

Splits: a ``holdout`` fraction each for valid and test, drawn by hashing
(seed, page id) with ``pipeline.sources.text.holdout_draw``: the same page
lands in the same split whatever the batching, order or worker.
"""

from __future__ import annotations

import bz2
import contextlib
import functools
import gzip
import html
import io
import queue
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import pyarrow as pa
from lxml import etree

from pipeline.download import fetch
from pipeline.errors import DataError
from pipeline.params import WikipediaParams
from pipeline.sources.text import holdout_splits

BATCH = 1000  # articles per document-table batch
READ_CHUNK = 1 << 20

# Namespace prefixes whose links are not prose: removed with their captions.
# The dump's <siteinfo> adds its localized names (e.g. "Файл", "Категория").
DROP_LINK_PREFIXES = frozenset({"file", "image", "media", "category"})
_DROP_NAMESPACE_KEYS = ("-2", "6", "14")  # Media, File, Category

# --- markup stripping --------------------------------------------------------------------

_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
# Tags whose content is not prose: removed with everything inside.
_DROP_TAGS = (
    "ref|references|math|chem|ce|gallery|timeline|score|syntaxhighlight|source|pre|code|imagemap|"
    "graph|mapframe|maplink|templatedata|hiero|inputbox|categorytree|includeonly|noinclude"
)
# The content is matched as an unrolled loop ([^<]* runs between "<"s), not a lazy
# ".*?": 3x faster on the enwiki fragment.
_PAIRED = re.compile(rf"<({_DROP_TAGS})\b[^>]*(?<!/)>[^<]*(?:<(?!/\1\s*>)[^<]*)*</\1\s*>", re.I)
_BR = re.compile(r"<br\s*/?>", re.I)
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")
# Template and table delimiters: whole runs of braces ("}}}}}" may close a parameter
# and a template), "{|", and a "|" followed by "}" (matched without the "}", so that
# "{{x|}}" still yields its "}}"). Whether "{|" and "|}" stand at the start of a line,
# which makes them table delimiters, is checked in Python: a "^" alternative under
# re.M makes the scan ~4x slower.
_BRACES = re.compile(r"(\{\{+|\}\}+|\{\||\|(?=\}))")
_URL_SCHEMES = r"(?:https?:|ftps?:|news:|irc:|ircs:|gopher:|nntp:|telnet:|svn:|git:|sftp:|ssh:)?//|mailto:"
_EXTERNAL = re.compile(rf"\[(?:{_URL_SCHEMES})[^\s\]]*[ \t]*([^\]\n]*)\]", re.I)
# Most links have no namespace prefix: plain regex substitutions take those; only
# links with a ":" go through the Python callback.
_PLAIN_LINK = re.compile(r"\[\[([^\[\]|:]*)\]\]")
_PIPED_LINK = re.compile(r"\[\[[^\[\]|:]*\|([^\[\]]+)\]\]")
_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
# Inline templates whose last argument is prose ({{lang|grc|ἀναρχία}}, {{nowrap|1 May}}):
# the argument is kept, innermost first, before every other template is removed.
_INLINE_TEMPLATE = re.compile(
    r"\{\{[ \t]*(?:lang|lang-[A-Za-z-]+|nowrap|nobr|transl|script|small|smallcaps|sic|em|strong)[ \t]*"
    r"\|(?:[^{}|]*\|)*([^{}|=]*)\}\}",
    re.I,
)
_LANG = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]+)*|simple")
_QUOTES = re.compile(r"''+")  # a literal prefix: 9x faster than '{2,}
_MAGIC = re.compile(r"__[A-Z]+__")
_EMPTY_PARENS = re.compile(r"\([ \t\u00a0,;:]*\)")


@functools.lru_cache(maxsize=16)
def _prefixed_link(drop: frozenset[str]) -> re.Pattern[str]:
    """The opening of a link to be removed whole: ``[[File:``, ``[[Category:``, ..."""
    names = "|".join(re.escape(name) for name in sorted(drop, key=len, reverse=True))
    return re.compile(rf"\[\[[ \t]*(?:{names})[ \t]*:", re.I)


def _remove_prefixed_links(text: str, drop: frozenset[str]) -> str:
    r"""Remove File/Image/Category links whole, with nested links and single brackets in captions.

    A caption such as ``[[File:x.jpg|thumb|in 1927 [above], [[Stalin]]]]`` defeats a
    regex over ``[^\[\]]``, so the matching ``]]`` is found by counting.
    """
    opening = _prefixed_link(drop)
    m = opening.search(text)
    if m is None:
        return text
    out = []
    pos = 0
    while m is not None:
        out.append(text[pos : m.start()])
        depth, i = 1, m.end()
        while depth:
            close = text.find("]]", i)
            if close < 0:  # never closed: drop the rest of the line
                nl = text.find("\n", m.end())
                i = len(text) if nl < 0 else nl
                break
            inner = text.find("[[", i, close)
            if inner >= 0:
                depth, i = depth + 1, inner + 2
            else:
                depth, i = depth - 1, close + 2
        pos = i
        m = opening.search(text, pos)
    out.append(text[pos:])
    return "".join(out)


def _at_line_start(parts: list[str], k: int, allowed: str) -> bool:
    """True when delimiter ``parts[k]`` has only ``allowed`` characters before it on its line."""
    prev = parts[k - 1]
    nl = prev.rfind("\n")
    if nl < 0 and k > 1:  # an earlier delimiter stands on the same line
        return False
    return not prev[nl + 1 :].strip(allowed)


def _strip_nested(text: str) -> str:
    """Remove {{templates}}, {{{parameters}}} and {| tables |}, nested in any order, in one pass.

    Everything is appended to the output as it is scanned; closing a construct
    truncates the output back to where that construct opened. So a stray closer
    is dropped, and an opener never closed is taken as literal text (as
    MediaWiki renders it) with only its delimiter dropped, while constructs
    closed inside it are still removed. Linear time however many openers a page
    leaves unclosed: each piece is appended once and removed at most once.
    """
    if "{" not in text and "}" not in text:
        return text
    # split() with a capturing group alternates text and delimiters (odd indices).
    # Walking that list is ~2x faster than finditer's match objects.
    parts = _BRACES.split(text)
    out = [parts[0]]
    stack: list[tuple[str, int]] = []  # (kind, len(out) when it opened)
    open_kinds: dict[str, int] = {"t": 0, "param": 0, "table": 0}
    for k in range(1, len(parts), 2):
        tok = parts[k]
        after = parts[k + 1]
        if tok[0] == "{" and tok[1] == "{":
            # "{{{" opens a parameter, "{{" a template; longer runs are several ({{{{x}}|y}}).
            n = len(tok)
            moves = ["param"] * (n % 2 == 1) + ["t"] * ((n - 3 * (n % 2 == 1)) // 2)
            moves.reverse()  # outermost first: "{{{{{" is a template, then a parameter
        elif tok[0] == "}":
            # Close greedily from the innermost: three braces end a parameter, two a template;
            # a last single brace is plain text.
            moves, n, depth = [], len(tok), len(stack)
            while n >= 2:
                top = stack[depth - 1][0] if 0 < depth <= len(stack) else "t"
                if top == "param" and n >= 3:
                    moves.append("/param")
                    n -= 3
                else:
                    moves.append("/t")
                    n -= 2
                depth -= 1
            after = "}" * n + after
        elif tok == "{|" and _at_line_start(parts, k, " \t:"):
            moves = ["table"]
        elif tok == "|" and after[:1] == "}" and _at_line_start(parts, k, " \t"):
            moves, after = ["/table"], after[1:]  # "|}", not "|}}": split left its "}" in the next piece
        else:  # "{|" or "|" that is not a table delimiter: plain text
            out.append(tok)
            out.append(after)
            continue
        for move in moves:
            if move[0] != "/":
                stack.append((move, len(out)))
                open_kinds[move] += 1
            elif open_kinds[move[1:]]:
                while True:  # close what the matching opener still holds open
                    kind, mark = stack.pop()
                    open_kinds[kind] -= 1
                    if kind == move[1:]:
                        break
                del out[mark:]
            # else: a closer with nothing of its kind open, dropped
        out.append(after)
    return "".join(out)


def _link(m: re.Match[str], drop: frozenset[str]) -> str:
    target, pipe, label = m.group(1).partition("|")
    target = target.strip()
    if target.startswith(":"):  # [[:Category:X]]: a visible link to a category page
        target = target[1:]
    else:
        prefix, colon, _ = target.partition(":")
        if colon:
            key = prefix.strip().lower()
            if key in drop:
                return ""
            if not pipe and _LANG.fullmatch(key):  # interlanguage link: [[de:Foo]]
                return ""
    if pipe:
        if label.strip():
            return label
        return re.sub(r"\s*\(.*\)$", "", target.partition(":")[2] or target)  # the pipe trick
    return target


def strip_markup(text: str, drop_prefixes: frozenset[str] = DROP_LINK_PREFIXES) -> str:
    """Wikitext → plain prose, one paragraph or heading per line.

    Args:
        text: a page's wikitext (XML entities already decoded by the parser).
        drop_prefixes: lower-case link prefixes whose links are removed whole
            (File, Image, Media, Category and their localized names).
    """
    # "".join(P.split(text)) is P.sub(r"\1" or "", text) for a pattern with at most
    # one group, and twice as fast: no template expansion per match.
    if "<" in text:
        text = "".join(_COMMENT.split(text))
        text = _PAIRED.sub("", text)
        text = _BR.sub(" ", text)
        text = "".join(_TAG.split(text))
    if "{{" in text:
        for _ in range(4):
            text, n = _INLINE_TEMPLATE.subn(r"\1", text)
            if not n:
                break
    text = _strip_nested(text)
    if "[" in text:
        text = _remove_prefixed_links(text, drop_prefixes)
        text = "".join(_EXTERNAL.split(text))
        for _ in range(8):  # innermost links first: a File caption may hold links
            text = "".join(_PLAIN_LINK.split(text))
            text = "".join(_PIPED_LINK.split(text))
            if "[[" not in text:
                break
            text, n = _LINK.subn(lambda m: _link(m, drop_prefixes), text)
            if not n:
                break
        text = text.replace("[[", "").replace("]]", "")
    if "''" in text:
        text = "".join(_QUOTES.split(text))
    if "__" in text:
        text = _MAGIC.sub("", text)
    if "&" in text:
        text = html.unescape(text)
    if "(" in text:
        text = _EMPTY_PARENS.sub("", text)
    return _lines(text)


def _lines(text: str) -> str:
    """One line per paragraph, heading or list item: markers dropped, whitespace collapsed."""
    out = []
    for line in text.split("\n"):
        line = line.strip()
        if not line:
            continue
        first = line[0]
        if first == "=" and line[-1] == "=":  # == Heading ==
            line = line.strip("=").strip()
        elif first in "*#:;":  # list items and indentation
            line = line.lstrip("*#:;").strip()
        elif line.startswith("----"):  # horizontal rule
            line = line.lstrip("-").strip()
        if "  " in line or "\t" in line or "\u00a0" in line:
            line = " ".join(line.split())
        if line:
            out.append(line)
    return "\n".join(out)


# --- pages -------------------------------------------------------------------------------


@dataclass
class Stats:
    """What happened to the pages read: every page is counted in exactly one bucket but ``pages``."""

    pages: int = 0
    kept: int = 0
    redirects: int = 0
    other_namespace: int = 0
    short: int = 0  # stripped text shorter than min_chars

    def add(self, other: Stats) -> None:
        for name in ("pages", "kept", "redirects", "other_namespace", "short"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True)
class Article:
    page_id: int
    title: str
    text: str  # plain prose, markup stripped


@dataclass
class Chunk:
    """The result of parsing one stream range of a multistream dump."""

    articles: list[Article]
    stats: Stats = field(default_factory=Stats)


def _parser_args() -> dict[str, object]:
    # Untrusted XML: no entity expansion, no DTD, no network. huge_tree lifts libxml2's
    # 10 MB limit on one text node (a few real pages exceed it); with entities off,
    # that limit is not what guards against expansion attacks.
    return {"resolve_entities": False, "no_network": True, "load_dtd": False, "huge_tree": True}


def drop_prefixes_from(namespaces: Iterable[tuple[str, str]]) -> frozenset[str]:
    """Link prefixes to drop: the English names plus a dump's own names for Media, File, Category.

    Args:
        namespaces: ``(key, name)`` pairs from ``<siteinfo><namespaces>``.
    """
    names = {name.strip().lower() for key, name in namespaces if key in _DROP_NAMESPACE_KEYS and name.strip()}
    return DROP_LINK_PREFIXES | frozenset(names)


def _siteinfo_namespaces(el: etree._Element) -> list[tuple[str, str]]:
    return [(ns.get("key", ""), ns.text or "") for ns in el.iterfind("{*}namespaces/{*}namespace")]


def iter_articles(
    stream: IO[bytes],
    *,
    source: str,
    namespaces: Iterable[int] = (0,),
    min_chars: int = 1,
    drop_prefixes: frozenset[str] | None = None,
    stats: Stats | None = None,
) -> Iterator[Article]:
    """Parse a MediaWiki XML export from a byte stream; yield the kept pages as plain prose.

    Args:
        stream: the XML bytes, undecoded: its declaration or BOM sets the encoding.
        source: the file or URL, for error messages.
        namespaces: page namespaces to keep.
        min_chars: pages whose stripped text is shorter are dropped (counted as short).
        drop_prefixes: link prefixes to remove; default, the English names plus those
            in the dump's ``<siteinfo>``.
        stats: counts are added here.
    """
    keep_ns = {str(n) for n in namespaces}
    drop = drop_prefixes if drop_prefixes is not None else DROP_LINK_PREFIXES
    learn_names = drop_prefixes is None
    stats = stats if stats is not None else Stats()
    context = etree.iterparse(stream, events=("end",), tag=("{*}siteinfo", "{*}page"), **_parser_args())
    try:
        for _, el in context:
            if el.tag.endswith("siteinfo"):
                if learn_names:
                    drop = drop_prefixes_from(_siteinfo_namespaces(el))
            else:
                stats.pages += 1
                article = _article(el, keep_ns, drop, min_chars, stats)
                if article is not None:
                    yield article
            # Bounded memory: drop this element's content and everything parsed before it.
            el.clear(keep_tail=False)
            parent = el.getparent()
            if parent is not None:
                while el.getprevious() is not None:
                    del parent[0]
    except etree.XMLSyntaxError as e:
        raise DataError(
            f"{source}: not a well-formed MediaWiki XML dump ({e}); if it was downloaded, delete it from "
            "the cache and rerun to fetch it again"
        ) from None
    except (EOFError, OSError) as e:  # raised by the bz2/gzip decompressors (the inline decoder)
        raise DataError(
            f"{source}: decompression failed ({e}); the file is damaged or truncated: delete it from the "
            "cache and rerun to fetch it again"
        ) from None


def _article(el: etree._Element, keep_ns: set[str], drop: frozenset[str], min_chars: int,
             stats: Stats) -> Article | None:  # fmt: skip
    ns = (el.findtext("{*}ns") or "0").strip()
    if ns not in keep_ns:
        stats.other_namespace += 1
        return None
    wikitext = el.findtext("{*}revision/{*}text") or ""
    if el.find("{*}redirect") is not None or wikitext.lstrip()[:9].upper() == "#REDIRECT":
        stats.redirects += 1
        return None
    text = strip_markup(wikitext, drop)
    if len(text) < min_chars:
        stats.short += 1
        return None
    stats.kept += 1
    page_id = el.findtext("{*}id")
    return Article(int(page_id) if page_id else -1, el.findtext("{*}title") or "", text)


# --- opening dumps -----------------------------------------------------------------------


def _magic(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(4)


class _Bzip2Process(io.RawIOBase):
    """The output of ``bzip2 -dc path``: decompression on another core, in another process."""

    def __init__(self, path: Path, binary: str) -> None:
        self.path = path
        self._proc = subprocess.Popen(
            [binary, "-dc", "--", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
        )
        assert self._proc.stdout is not None
        self._out = self._proc.stdout
        # A 1 MB pipe (Linux; default 64 KB) means fewer wake-ups between the two processes.
        with contextlib.suppress(ImportError, OSError):
            import fcntl

            fcntl.fcntl(self._out.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = self._out.readinto(buffer)
        if not n:
            self.check()
        return n or 0

    def check(self) -> None:
        """Raise DataError if bzip2 failed (a damaged file); call at the end of the data."""
        code = self._proc.wait()
        if code != 0:
            err = self._proc.stderr.read().decode("utf-8", "replace") if self._proc.stderr else ""
            err = err.strip().split("\n")[0]  # bzip2's first line says what is wrong
            raise DataError(
                f"{self.path}: bzip2 failed (exit {code}: {err}); the file is damaged or truncated: delete it "
                "from the cache and rerun to fetch it again"
            )

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()  # stopped early (max_articles, or an error): no need to finish
        self._proc.wait()
        self._out.close()
        if self._proc.stderr:
            self._proc.stderr.close()
        super().close()


class _Bz2Thread(io.RawIOBase):
    """Python's bz2 in a background thread (it releases the GIL), when there is no bzip2 program."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._pending = memoryview(b"")
        self._done = False
        self._thread = threading.Thread(target=self._run, name="bz2-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with bz2.open(self.path, "rb") as f:
                while not self._stop.is_set():
                    block = f.read(READ_CHUNK)
                    if not block:
                        break
                    self._put(block)
        except (OSError, EOFError, ValueError) as e:  # a damaged stream: reported by readinto
            self._error = e
        finally:
            self._put(None)

    def _put(self, item: bytes | None) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(queue.Full):
                self._queue.put(item, timeout=0.1)
                return

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            if self._done:
                return 0
            block = self._queue.get()
            if block is None:
                self._done = True
                if self._error is not None:
                    raise DataError(
                        f"{self.path}: bz2 decompression failed ({self._error}); the file is damaged or "
                        "truncated: delete it from the cache and rerun to fetch it again"
                    )
                return 0
            self._pending = memoryview(block)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        super().close()


@contextlib.contextmanager
def open_dump(path: str | Path, *, decoder: str = "auto") -> Iterator[IO[bytes]]:
    """The decompressed bytes of a dump: bz2, gzip or plain XML, sniffed from the first bytes.

    Args:
        decoder: for bz2, ``"bzip2"`` (a ``bzip2 -dc`` process), ``"thread"``
            (Python's bz2 in a thread), ``"inline"`` (Python's bz2 in this thread),
            or ``"auto"``: bzip2 when the program is installed, else thread.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; set corpus.wikipedia.url to a dump")
    magic = _magic(path)
    raw: io.RawIOBase | IO[bytes]
    if magic.startswith(b"BZh"):
        binary = shutil.which("bzip2") if decoder in ("auto", "bzip2") else None
        if decoder == "bzip2" and binary is None:
            raise DataError("the bzip2 program is not installed; use another decoder")
        if binary is not None:
            raw = _Bzip2Process(path, binary)
        elif decoder == "inline":
            raw = bz2.open(path, "rb")
        else:
            raw = _Bz2Thread(path)
    elif magic.startswith(b"\x1f\x8b"):
        raw = gzip.open(path, "rb")
    else:
        raw = open(path, "rb")
    try:
        yield io.BufferedReader(raw, READ_CHUNK) if isinstance(raw, io.RawIOBase) else raw
    finally:
        raw.close()


def read_siteinfo(path: str | Path) -> list[tuple[str, str]]:
    """The ``(key, name)`` namespaces of a dump's ``<siteinfo>`` (empty if it has none).

    Reads only the head of the dump (the first stream of a multistream dump).
    """
    with open_dump(path, decoder="inline") as stream:
        context = etree.iterparse(stream, events=("end",), tag=("{*}siteinfo", "{*}page"), **_parser_args())
        try:
            for _, el in context:
                return _siteinfo_namespaces(el) if el.tag.endswith("siteinfo") else []
        except etree.XMLSyntaxError as e:
            raise DataError(f"{path}: not a well-formed MediaWiki XML dump ({e})") from None
    return []


# --- multistream -------------------------------------------------------------------------


def stream_ranges(index: str | Path, dump: str | Path) -> Iterator[tuple[int, int]]:
    """Byte ranges ``(start, end)`` of the page streams of a multistream dump, in order.

    ``index`` holds lines ``offset:page_id:title`` (bz2-compressed or plain), one per page;
    the pages of one bz2 stream share its offset. The last range ends at the end of
    the dump (its trailing ``</mediawiki>`` stream is harmless to ``pages_in_range``).
    """
    index, dump = Path(index), Path(dump)
    size = dump.stat().st_size
    prev: int | None = None
    opener = bz2.open if _magic(index).startswith(b"BZh") else open
    with opener(index, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip(b"\r\n")
            if not line:
                continue
            offset, _, rest = line.partition(b":")
            page_id, sep, _ = rest.partition(b":")
            if not (offset.isdigit() and page_id.isdigit() and sep):
                raise DataError(f"{index}:{lineno}: expected offset:page_id:title, got {line[:80]!r}")
            start = int(offset)
            if prev is not None and start == prev:
                continue
            if (prev is not None and start < prev) or start >= size:
                raise DataError(
                    f"{index}:{lineno}: stream offset {start} is out of order or past the end of {dump} "
                    f"({size} bytes); the index does not belong to this dump"
                )
            if prev is not None:
                yield prev, start
            prev = start
    if prev is None:
        raise DataError(f"{index}: no index lines; is it the …-multistream-index.txt.bz2 of {dump.name}?")
    yield prev, size


def _decompress_streams(data: bytes, where: str) -> bytes:
    """Decompress one or more whole bz2 streams laid end to end."""
    out = []
    while data:
        d = bz2.BZ2Decompressor()
        try:
            out.append(d.decompress(data))
        except OSError as e:
            raise DataError(f"{where}: not a bz2 stream ({e}); the range or the index is wrong") from None
        if not d.eof:
            raise DataError(f"{where}: the bz2 stream is cut short; the range or the index is wrong")
        data = d.unused_data
    return b"".join(out)


def pages_in_range(
    path: str | Path,
    start: int,
    end: int,
    *,
    namespaces: Iterable[int] = (0,),
    min_chars: int = 1,
    drop_prefixes: frozenset[str] = DROP_LINK_PREFIXES,
) -> Chunk:
    """Parse the pages of one byte range of a multistream dump (a pure function).

    The range holds whole bz2 streams of ``<page>`` elements (``stream_ranges``).
    Pass ``drop_prefixes_from(read_siteinfo(path))`` for a non-English dump: its
    ``<siteinfo>`` lives in the first stream, outside any page range.
    """
    where = f"{path} bytes {start}-{end}"
    with open(path, "rb") as f:
        f.seek(start)
        data = _decompress_streams(f.read(end - start), where)
    first, last = data.find(b"<page>"), data.rfind(b"</page>")
    stats = Stats()
    if first < 0 or last < 0:
        return Chunk([], stats)
    # The pages of a stream have no root element (it is in the first stream): give them one.
    body = io.BytesIO(b"<mediawiki>" + data[first : last + len(b"</page>")] + b"</mediawiki>")
    articles = list(iter_articles(body, source=where, namespaces=namespaces, min_chars=min_chars,
                                  drop_prefixes=drop_prefixes, stats=stats))  # fmt: skip
    return Chunk(articles, stats)


# --- the source --------------------------------------------------------------------------


def articles_table(articles: list[Article], holdout: float, seed: int) -> pa.Table:
    """A document-table batch: ``holdout`` each to valid and test, by a hash of (seed, page id)."""
    ids = np.array([a.page_id for a in articles], dtype=np.int64)
    split = holdout_splits(seed, ids, holdout)
    return pa.table(
        {
            "split": pa.array(split, pa.string()),
            "text": pa.array([a.text for a in articles], pa.string()),
            "source_id": pa.array([str(a.page_id) for a in articles], pa.string()),
            "title": pa.array([a.title for a in articles], pa.string()),
        }
    )


def _articles(params: WikipediaParams, dump: Path, stats: Stats) -> Iterator[Article]:
    if params.index_url is None:
        with open_dump(dump) as stream:
            yield from iter_articles(stream, source=str(dump), namespaces=params.namespaces,
                                     min_chars=params.min_chars, stats=stats)  # fmt: skip
        return
    index = fetch(params.index_url, params.cache_dir, retries=params.retries, timeout=params.timeout)
    drop = drop_prefixes_from(read_siteinfo(dump))
    for start, end in stream_ranges(index, dump):
        chunk = pages_in_range(dump, start, end, namespaces=params.namespaces, min_chars=params.min_chars,
                               drop_prefixes=drop)  # fmt: skip
        stats.add(chunk.stats)
        yield from chunk.articles


def read(params: WikipediaParams) -> Iterator[pa.Table]:
    """The dump's articles as document-table batches (``split``, ``text``, ``source_id``, ``title``)."""
    dump = fetch(params.url, params.cache_dir, sha256=params.sha256, size=params.size,
                 retries=params.retries, timeout=params.timeout)  # fmt: skip
    stats = Stats()
    batch: list[Article] = []
    taken = 0
    articles = _articles(params, dump, stats)
    try:
        for article in articles:
            batch.append(article)
            taken += 1
            if len(batch) == BATCH:
                yield articles_table(batch, params.holdout, params.seed)
                batch = []
            if params.max_articles is not None and taken >= params.max_articles:
                break
    finally:
        articles.close()  # stops the decompressor when max_articles cut the dump short
    if batch:
        yield articles_table(batch, params.holdout, params.seed)
    print(
        f"wikipedia: {dump.name}: {stats.pages} pages read, {stats.kept} kept; skipped {stats.redirects} "
        f"redirects, {stats.other_namespace} in other namespaces, {stats.short} too short",
        file=sys.stderr,
    )
