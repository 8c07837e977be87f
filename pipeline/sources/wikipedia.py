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
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import pyarrow as pa
from lxml import etree

from pipeline.download import damaged_fix, fetch
from pipeline.errors import DataError, shown
from pipeline.params import WikipediaParams
from pipeline.sources import xmlerrors
from pipeline.sources.text import holdout_splits

BATCH = 1000  # articles per document-table batch
READ_CHUNK = 1 << 20
MAX_PAGE_ID = 2**63 - 1  # page ids are int64 in the document table and the holdout hash
INDEX_LINE_BYTES = 1 << 16  # a multistream index line is offset:id:title, and a title is at most 255 bytes
# The fix for a damaged dump when the caller does not say where it came from (read() does).
REPLACE = "replace it with an intact copy of the dump"
# Raised by the bz2/gzip decompressors: a truncated stream (EOFError), a bad header or CRC
# (OSError, gzip.BadGzipFile), damaged deflate data (zlib.error, not an OSError).
DECOMPRESSION_ERRORS = (EOFError, OSError, zlib.error)

# Namespace prefixes whose links are not prose: removed with their captions.
# The dump's <siteinfo> adds its localized names (e.g. "Файл", "Категория").
DROP_LINK_PREFIXES = frozenset({"file", "image", "media", "category"})
_DROP_NAMESPACE_KEYS = ("-2", "6", "14")  # Media, File, Category

# --- markup stripping --------------------------------------------------------------------

_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.DOTALL)
# Tags whose content is not prose: removed with everything inside.
_DROP_TAGS = (
    "ref|references|math|chem|ce|gallery|timeline|score|syntaxhighlight|source|pre|code|imagemap|"
    "graph|mapframe|maplink|templatedata|hiero|inputbox|categorytree|includeonly|noinclude"
)
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")
# Template and table delimiters: whole runs of braces ("}}}}}" may close a parameter
# and a template), "{|", and a "|" followed by "}" (matched without the "}", so that
# "{{x|}}" still yields its "}}"). Whether "{|" and "|}" stand at the start of a line,
# which makes them table delimiters, is checked in Python: a "^" alternative under
# re.M makes the scan ~4x slower.
_BRACES = re.compile(r"(\{\{+|\}\}+|\{\||\|(?=\}))")
_URL_SCHEMES = r"(?:https?:|ftps?:|news:|irc:|ircs:|gopher:|nntp:|telnet:|svn:|git:|sftp:|ssh:)?//|mailto:"
# "[http://e.org label]": the opening here; _external_links finds the rest. Possessive "*+":
# nothing after the URL can match a character the URL took, so backtracking (which made a
# regex for the whole link cubic in a line of "[//"s) cannot help and is ruled out.
_EXTERNAL_OPEN = re.compile(rf"\[(?=[/fghimnst])(?:{_URL_SCHEMES})", re.IGNORECASE)
_EXTERNAL_URL = re.compile(r"[^\s\]]*+[ \t]*+")
# Most links have no namespace prefix: plain regex substitutions take those; only
# links with a ":" go through the Python callback.
_PLAIN_LINK = re.compile(r"\[\[([^\[\]|:]*)\]\]")
_PIPED_LINK = re.compile(r"\[\[[^\[\]|:]*\|([^\[\]]+)\]\]")
_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
# The link passes below run at most 8 times, 3 passes each, and a pass takes at most one "[["
# from the end of a run of "[" (the one before the innermost link) and one "]]" from the start
# of a run of "]": 24 pairs. Brackets beyond those are left to the final replace("[[", ""),
# whatever happens. So a longer run is cut to its last (first, for "]") 48 brackets, keeping
# its parity: the same result, without 24 passes over each bracket of a 10,000-deep nest.
_BRACKET_RUN_KEEP = 48
_BRACKET_RUN = re.compile(rf"\[{{{_BRACKET_RUN_KEEP + 2},}}|\]{{{_BRACKET_RUN_KEEP + 2},}}")
# Inline templates whose last argument is prose ({{lang|grc|ἀναρχία}}, {{nowrap|1 May}}):
# the argument is kept, innermost first, before every other template is removed.
# Its lookahead (?=...), like those of _EXTERNAL_OPEN and _prefixed_link, checks the first
# letter of the names that follow and so rejects most positions in one step: in a run of
# 10,000 "{{" or "[[", trying every alternative at every bracket cost 5x the rest of the stripper.
_INLINE_TEMPLATE = re.compile(
    r"\{\{(?=[ \t]*[lnste])[ \t]*(?:lang|lang-[A-Za-z-]+|nowrap|nobr|transl|script|small|smallcaps|sic|em|strong)[ \t]*"
    r"\|(?:[^{}|]*+\|)*+([^{}|=]*+)\}\}",  # possessive: giving back a "|"-ended argument never helps
    re.IGNORECASE,
)
_LANG = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]+)*|simple")
_QUOTES = re.compile(r"''+")  # a literal prefix: 9x faster than '{2,}
_MAGIC = re.compile(r"__[A-Z]+__")
_EMPTY_PARENS = re.compile(r"\([ \t\u00a0,;:]*\)")


_PAIRED_NAMES = frozenset(_DROP_TAGS.split("|"))
# The closing tag of each name: "</ref>", "</REF >".
_PAIRED_CLOSE = {name: re.compile(rf"</{name}\s*+>", re.IGNORECASE) for name in _PAIRED_NAMES}
_PAIRED_CLOSE_ANY = re.compile(rf"</({_DROP_TAGS})\s*+>", re.IGNORECASE)


@functools.lru_cache(maxsize=64)
def _paired_open(names: frozenset[str]) -> re.Pattern[str]:
    """The opening of a paired tag among ``names``, one named group per name (m.lastgroup names it)."""
    alternatives = "|".join(f"(?P<{name}>{name})" for name in sorted(names))
    return re.compile(rf"<(?:{alternatives})\b", re.IGNORECASE)


def _drop_paired(text: str) -> str:
    r"""Remove ``<ref>…</ref>``, ``<math>…</math>``, … (_DROP_TAGS) with their content, in linear time.

    The result is that of ``re.sub(r"<(tag)\b[^>]*(?<!/)>.*?</\1\s*>", "", text, flags=re.I | re.S)``
    (for ASCII tag names): an opening tag that is not self-closing, up to the first closing
    tag of the same name; an opening tag never closed is left in place (the tag pass below
    removes the tag alone). That regex, run as one pattern, rescans to the end of the page
    from every opening tag that is never closed: 8,000 stray ``<ref>`` in 48 KB took 9 s,
    and 4x as long at twice the count. Here each opening tag's ``>`` and each name's next
    closing tag are found once and reused by every opening tag before them, and the opening
    tags of a name are no longer looked for once no closing tag of that name is left. So the
    page is scanned a bounded number of times (about once per tag name in it), whatever is
    left unclosed.
    """
    if _PAIRED_CLOSE_ANY.search(text) is None:  # nothing is ever closed: nothing can match
        return text
    names = _PAIRED_NAMES
    out: list[str] = []
    pos = 0  # the text before pos is settled: copied to out, or removed
    gt = -1  # the first ">" at or after the opening tag under consideration
    # name -> (start, end) of its first closing tag at or after some point
    closes: dict[str, tuple[int, int]] = {}
    opening = _paired_open(names)
    m = opening.search(text)
    while m is not None:
        start, end = m.span()
        if gt < end:
            gt = text.find(">", end)
            if gt < 0:  # no ">" left: no opening tag can end, so nothing more can match
                break
        if text[gt - 1] == "/":  # <ref name="a" />: self-closing, nothing to remove
            m = opening.search(text, end)
            continue
        name = m.lastgroup
        close = closes.get(name)
        if close is None or close[0] <= gt:
            found = _PAIRED_CLOSE[name].search(text, gt + 1)
            if found is None:  # never closed from here on: stop looking for its opening tags at all
                names = names - {name}
                if not names:
                    break
                opening = _paired_open(names)
                m = opening.search(text, end)
                continue
            close = closes[name] = found.span()
        out.append(text[pos:start])
        pos = close[1]
        m = opening.search(text, pos)  # opening tags inside the removed element are skipped here, in C
    out.append(text[pos:])
    return "".join(out)


def _external_links(text: str) -> str:
    r"""``[http://e.org label]`` → ``label``, in linear time.

    The result is that of ``re.sub(r"\[(?:scheme)[^\s\]]*[ \t]*([^\]\n]*)\]", r"\1", text, flags=re.I)``.
    Such a link never spans lines and ends at the first "]" after its opening, so it
    matches exactly when that "]" comes before the next newline. The next "]" and the next
    newline are found once and reused by every opening before them: as one regex, each
    opening without a "]" rescanned its line, and backtracking made that cubic (a 6 KB line of
    "[//" took 190 s).
    """
    out: list[str] = []
    pos = 0
    n = len(text)
    close = newline = -1  # the next "]" and "\n" at or after the opening under consideration (n: none)
    for m in _EXTERNAL_OPEN.finditer(text):
        start, url = m.start(), m.end()
        if start < pos:  # inside the link just replaced
            continue
        if close < url:
            close = text.find("]", url)
            if close < 0:  # no "]" left: no more links
                break
        if newline < url:
            newline = text.find("\n", url)
            newline = n if newline < 0 else newline
        if newline < close:  # the line ends first: not a link
            continue
        label = _EXTERNAL_URL.match(text, url, close).end()  # past the URL and the spaces after it
        out.append(text[pos:start])
        out.append(text[label:close])
        pos = close + 1
    out.append(text[pos:])
    return "".join(out)


def _pipe_trick(name: str) -> str:
    r"""``[[Mercury (planet)|]]`` shows "Mercury": ``re.sub(r"\s*\(.*\)$", "", name)`` in linear time.

    (The regex retried ``.*\)$`` from every "(" and every space of a long target.) It removes
    the last line's first "(" through its final ")" with the spaces before it; ``$`` also
    matches before a final newline, which stays.
    """
    body = name.removesuffix("\n")
    if not body.endswith(")"):
        return name
    paren = body.find("(", body.rfind("\n") + 1)
    if paren < 0:
        return name
    return body[:paren].rstrip() + name[len(body) :]


def _short_run(m: re.Match[str]) -> str:
    """A run of brackets cut to _BRACKET_RUN_KEEP, its parity kept."""
    run = m.group()
    return run[0] * (_BRACKET_RUN_KEEP + len(run) % 2)


@functools.lru_cache(maxsize=16)
def _prefixed_link(drop: frozenset[str]) -> re.Pattern[str]:
    """The opening of a link to be removed whole: ``[[File:``, ``[[Category:``, ..."""
    names = "|".join(re.escape(name) for name in sorted(drop, key=len, reverse=True))
    first = "".join(sorted({re.escape(name[0]) for name in drop if name}))
    return re.compile(rf"\[\[(?=[ \t]*[{first}])[ \t]*(?:{names})[ \t]*:", re.IGNORECASE)


def _remove_prefixed_links(text: str, drop: frozenset[str]) -> str:
    r"""Remove File/Image/Category links whole, with nested links and single brackets in captions.

    A caption such as ``[[File:x.jpg|thumb|in 1927 [above], [[Stalin]]]]`` defeats a
    regex over ``[^\[\]]``, so the matching ``]]`` is found by counting. The next ``]]`` is
    found once and reused until the scan passes it: searching again from every nested
    ``[[`` or every unclosed link was quadratic.
    """
    opening = _prefixed_link(drop)
    m = opening.search(text)
    if m is None:
        return text
    out = []
    pos = 0
    n = len(text)
    close = -1  # the first "]]" at or after i, once found (n: there is none left)
    while m is not None:
        out.append(text[pos : m.start()])
        depth, i = 1, m.end()
        while depth:
            if close < i:
                close = text.find("]]", i)
                close = n if close < 0 else close
            if close == n:  # never closed: drop the rest of the line
                nl = text.find("\n", m.end())
                i = n if nl < 0 else nl
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


class _Open:
    """The constructs _strip_nested holds open, innermost last, run-length encoded.

    Entry i stands for ``counts[i]`` constructs of ``kinds[i]`` ("t" template, "param",
    "table") opened by one run of braces; closing any of them truncates the output back to
    ``marks[i]``, its length then. So a run of 10,000 "{{" is one entry and one step. Three
    flat lists rather than a list per entry: hundreds of thousands of small lists alive at
    once made Python's cyclic GC half the cost of a page of unclosed templates.
    """

    __slots__ = ("counts", "kinds", "marks", "opened")

    def __init__(self) -> None:
        self.kinds: list[str] = []
        self.marks: list[int] = []
        self.counts: list[int] = []
        self.opened = {"t": 0, "param": 0, "table": 0}

    def push(self, kind: str, mark: int, count: int) -> None:
        self.kinds.append(kind)
        self.marks.append(mark)
        self.counts.append(count)
        self.opened[kind] += count

    def close_braces(self, n: int, out: list[str]) -> int:
        """Close what a run of ``n`` closing braces closes; return the braces left over (0 or 1).

        Greedily from the innermost: three braces end a parameter, two a template (even when a
        parameter is innermost); past the bottom of the stack, pairs are stray closers. The
        moves are planned against the stack as it is, then made, as runs: [kind, how many].
        """
        kinds, counts = self.kinds, self.counts
        plan: list[list] = []
        e = len(kinds) - 1
        left = counts[e] if e >= 0 else 0  # constructs of entry e not yet planned to close
        while n >= 2:
            if e < 0:
                kind, count, n = "t", n // 2, n % 2
            elif kinds[e] == "param" and n >= 3:
                kind, count = "param", min(left, n // 3)
                n -= 3 * count
            elif kinds[e] == "param":
                kind, count = "t", 1
                n -= 2
            else:
                kind, count = "t", min(left, n // 2)
                n -= 2 * count
            if plan and plan[-1][0] == kind:
                plan[-1][1] += count
            else:
                plan.append([kind, count])
            left -= count
            if left <= 0 and e >= 0:
                e -= 1
                left = counts[e] if e >= 0 else 0
        for kind, count in plan:
            self.close(kind, count, out)
        return n

    def close(self, kind: str, count: int, out: list[str]) -> None:
        """Close ``count`` constructs of ``kind``, innermost first, with all that they hold open.

        A closer with nothing of its kind open is dropped.
        """
        kinds, marks, counts, opened = self.kinds, self.marks, self.counts, self.opened
        while count and opened[kind]:
            if kinds[-1] != kind:  # opened inside the one being closed: closed with it
                opened[kinds.pop()] -= counts.pop()
                marks.pop()
                continue
            closing = min(count, counts[-1])
            counts[-1] -= closing
            opened[kind] -= closing
            count -= closing
            mark = marks[-1]
            if not counts[-1]:
                kinds.pop()
                marks.pop()
                counts.pop()
            del out[mark:]


def _strip_nested(text: str) -> str:
    """Remove {{templates}}, {{{parameters}}} and {| tables |}, nested in any order, in one pass.

    Everything is appended to the output as it is scanned; closing a construct
    truncates the output back to where that construct opened. So a stray closer
    is dropped, and an opener never closed is taken as literal text (as
    MediaWiki renders it) with only its delimiter dropped, while constructs
    closed inside it are still removed. Linear time however many openers a page
    leaves unclosed: each piece is appended once and removed at most once, and a
    run of braces is one step (_Open).
    """
    if "{" not in text and "}" not in text:
        return text
    # split() with a capturing group alternates text and delimiters (odd indices).
    # Walking that list is ~2x faster than finditer's match objects.
    parts = _BRACES.split(text)
    out = [parts[0]]
    stack = _Open()
    opened, kinds, marks, counts = stack.opened, stack.kinds, stack.marks, stack.counts
    for k in range(1, len(parts), 2):
        tok = parts[k]
        after = parts[k + 1]
        if tok == "{{":  # by far the most common delimiter: one template opens (push, inlined)
            kinds.append("t")
            marks.append(len(out))
            counts.append(1)
            opened["t"] += 1
        elif tok[0] == "{" and tok[1] == "{":
            # "{{{" opens a parameter, "{{" a template; longer runs are several ({{{{x}}|y}}),
            # outermost first: "{{{{{" is a template, then a parameter.
            n, mark = len(tok), len(out)
            if n % 2 == 0:
                stack.push("t", mark, n // 2)
            else:
                if n > 3:
                    stack.push("t", mark, (n - 3) // 2)
                stack.push("param", mark, 1)
        elif tok[0] == "}":
            after = "}" * stack.close_braces(len(tok), out) + after
        elif tok == "{|" and _at_line_start(parts, k, " \t:"):
            stack.push("table", len(out), 1)
        elif tok == "|" and after[:1] == "}" and _at_line_start(parts, k, " \t"):
            stack.close("table", 1, out)
            after = after[1:]  # "|}", not "|}}": split left its "}" in the next piece
        elif tok == "|":  # not a table delimiter: plain text
            out.append(tok)
        # else: a "{|" that is not at the start of a line, dropped like an unclosed "{{": no markup is left
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
        return _pipe_trick(target.partition(":")[2] or target)
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
        text = _drop_paired(text)
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
        text = _external_links(text)
        if "[" * _BRACKET_RUN_KEEP in text or "]" * _BRACKET_RUN_KEEP in text:
            text = _BRACKET_RUN.sub(_short_run, text)
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
    fix: str = REPLACE,
) -> Iterator[Article]:
    """Parse a MediaWiki XML export from a byte stream; yield the kept pages as plain prose.

    A file that declares entities (a ``<!DOCTYPE [...]>``) is refused at its first page:
    MediaWiki never writes one, and the entities are not expanded anyway.

    Args:
        stream: the XML bytes, undecoded: its declaration or BOM sets the encoding.
        source: the file or URL, for error messages.
        namespaces: page namespaces to keep.
        min_chars: pages whose stripped text is shorter are dropped (counted as short).
        drop_prefixes: link prefixes to remove; default, the English names plus those
            in the dump's ``<siteinfo>``.
        stats: counts are added here.
        fix: what to do about a damaged file, for error messages (``download.damaged_fix``).
    """
    keep_ns = {str(n) for n in namespaces}
    drop = drop_prefixes if drop_prefixes is not None else DROP_LINK_PREFIXES
    learn_names = drop_prefixes is None
    stats = stats if stats is not None else Stats()
    context = etree.iterparse(stream, events=("end",), tag=("{*}siteinfo", "{*}page"), **_parser_args())
    first = True
    try:
        for _, el in context:
            if first:
                _refuse_entities(el, source)
                first = False
            if el.tag.endswith("siteinfo"):
                if learn_names:
                    drop = drop_prefixes_from(_siteinfo_namespaces(el))
            else:
                stats.pages += 1
                article = _article(el, keep_ns, drop, min_chars, stats, source, fix)
                if article is not None:
                    yield article
            # Bounded memory: drop this element's content and everything parsed before it.
            el.clear(keep_tail=False)
            parent = el.getparent()
            if parent is not None:
                while el.getprevious() is not None:
                    del parent[0]
    except etree.XMLSyntaxError as e:
        raise DataError(_xml_error(source, e, fix)) from None
    except DECOMPRESSION_ERRORS as e:  # the inline bz2 decoder, or gzip
        raise DataError(
            f"{source}: decompression failed ({_reason(e)}); the file is damaged or truncated: {fix}"
        ) from None


def _reason(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text if len(text) <= 200 else text[:199] + "…"


def _xml_error(source: str, e: etree.XMLSyntaxError, fix: str) -> str:
    """One line for a dump libxml2 could not parse: where, what, and what to do."""
    problem = xmlerrors.problem(e)
    if problem.entities and not problem.line:  # an expansion limit: libxml2's position is not the entity's
        return f"{source}: {xmlerrors.REFUSED} (libxml2: {problem.message}); {_NOT_A_DUMP}"
    if problem.entities:
        return (
            f"{problem.where(source)}: an entity reference this reader refuses ({problem.message}); "
            f"a MediaWiki dump uses XML's own entities only: {fix}"
        )
    return (
        f"{source}: not a well-formed MediaWiki XML dump (line {problem.line}, column {problem.column}: "
        f"{problem.message}); {fix}"
    )


# For a file that declares entities: fetching it again or "an intact copy" cannot help.
_NOT_A_DUMP = (
    "MediaWiki never writes a DOCTYPE, so this file is not a dump as exported; set corpus.wikipedia.url to one"
)


def _refuse_entities(el: etree._Element, source: str) -> None:
    """Refuse a dump that declares entities, naming the line of the first reference when ``el`` holds one."""
    names = xmlerrors.declared_entities(el)
    if names:
        line = xmlerrors.first_entity_line(el)
        more = f" and {len(names) - 1} more" if len(names) > 1 else ""
        raise DataError(
            f"{source}:{line or el.sourceline}: {xmlerrors.REFUSED} (it declares {shown(names[0], 60)}{more}); "
            f"{_NOT_A_DUMP}"
        )


def _page_id(el: etree._Element, title: str, source: str, fix: str) -> int:
    """The page's ``<id>``: a whole number that fits int64 (-1 when a page has none)."""
    raw = (el.findtext("{*}id") or "").strip()
    if not raw:
        return -1
    # isascii: str.isdigit also accepts "²" and other digits that int() refuses; the length
    # test comes before int(), which refuses strings of over 4300 digits with a ValueError.
    if raw.isascii() and raw.isdigit() and len(raw) <= 19 and int(raw) <= MAX_PAGE_ID:
        return int(raw)
    raise DataError(
        f"{source}:{el.sourceline}: page {shown(title, 80)} has <id> {shown(raw, 60)}, not a whole number "
        f"from 0 to 2^63-1; the dump is damaged or is not a MediaWiki export: {fix}"
    )


def _article(
    el: etree._Element,
    keep_ns: set[str],
    drop: frozenset[str],
    min_chars: int,
    stats: Stats,
    source: str,
    fix: str,
) -> Article | None:
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
    title = el.findtext("{*}title") or ""
    page_id = _page_id(el, title, source, fix)
    stats.kept += 1
    return Article(page_id, title, text)


# --- opening dumps -----------------------------------------------------------------------


def _magic(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(4)


class _Bzip2Process(io.RawIOBase):
    """The output of ``bzip2 -dc path``: decompression on another core, in another process."""

    def __init__(self, path: Path, binary: str, fix: str = REPLACE) -> None:
        self.path = path
        self.fix = fix
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
            err = _reason(RuntimeError(err.strip().split("\n")[0]))  # bzip2's first line says what is wrong
            raise DataError(
                f"{self.path}: bzip2 failed (exit {code}: {err}); the file is damaged or truncated: {self.fix}"
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

    def __init__(self, path: Path, fix: str = REPLACE) -> None:
        self.path = path
        self.fix = fix
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
        except (*DECOMPRESSION_ERRORS, ValueError) as e:  # a damaged stream: reported by readinto
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
                        f"{self.path}: bz2 decompression failed ({_reason(self._error)}); the file is damaged or "
                        f"truncated: {self.fix}"
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
def open_dump(path: str | Path, *, decoder: str = "auto", fix: str = REPLACE) -> Iterator[IO[bytes]]:
    """The decompressed bytes of a dump: bz2, gzip or plain XML, sniffed from the first bytes.

    Args:
        decoder: for bz2, ``"bzip2"`` (a ``bzip2 -dc`` process), ``"thread"``
            (Python's bz2 in a thread), ``"inline"`` (Python's bz2 in this thread),
            or ``"auto"``: bzip2 when the program is installed, else thread.
        fix: what to do about a damaged file, for error messages.
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
            raw = _Bzip2Process(path, binary, fix)
        elif decoder == "inline":
            raw = bz2.open(path, "rb")  # noqa: SIM115 (closed in the finally below)
        else:
            raw = _Bz2Thread(path, fix)
    elif magic.startswith(b"\x1f\x8b"):
        raw = gzip.open(path, "rb")  # noqa: SIM115 (closed in the finally below)
    else:
        raw = open(path, "rb")  # noqa: SIM115 (closed in the finally below)
    try:
        yield io.BufferedReader(raw, READ_CHUNK) if isinstance(raw, io.RawIOBase) else raw
    finally:
        raw.close()


def read_siteinfo(path: str | Path, fix: str = REPLACE) -> list[tuple[str, str]]:
    """The ``(key, name)`` namespaces of a dump's ``<siteinfo>`` (empty if it has none).

    Reads only the head of the dump (the first stream of a multistream dump).
    """
    with open_dump(path, decoder="inline", fix=fix) as stream:
        context = etree.iterparse(stream, events=("end",), tag=("{*}siteinfo", "{*}page"), **_parser_args())
        try:
            for _, el in context:
                _refuse_entities(el, str(path))
                return _siteinfo_namespaces(el) if el.tag.endswith("siteinfo") else []
        except etree.XMLSyntaxError as e:
            raise DataError(_xml_error(str(path), e, fix)) from None
        except DECOMPRESSION_ERRORS as e:
            raise DataError(
                f"{path}: decompression failed ({_reason(e)}); the file is damaged or truncated: {fix}"
            ) from None
    return []


# --- multistream -------------------------------------------------------------------------


def stream_ranges(index: str | Path, dump: str | Path, fix: str = REPLACE) -> Iterator[tuple[int, int]]:
    """Byte ranges ``(start, end)`` of the page streams of a multistream dump, in order.

    ``index`` holds lines ``offset:page_id:title`` (bz2-compressed or plain), one per page;
    the pages of one bz2 stream share its offset. The last range ends at the end of
    the dump (its trailing ``</mediawiki>`` stream is harmless to ``pages_in_range``).
    ``fix``: what to do about a damaged index, for error messages.
    """
    index, dump = Path(index), Path(dump)
    size = dump.stat().st_size
    prev: int | None = None
    opener = bz2.open if _magic(index).startswith(b"BZh") else open
    lineno = 0
    try:
        with opener(index, "rb") as f:
            # readline with a limit: a line never holds more than INDEX_LINE_BYTES in memory.
            while raw := f.readline(INDEX_LINE_BYTES):
                lineno += 1
                line = raw.rstrip(b"\r\n")
                if len(raw) == INDEX_LINE_BYTES and not raw.endswith(b"\n"):
                    raise DataError(
                        f"{index}:{lineno}: a line of over {INDEX_LINE_BYTES} bytes; a multistream index has "
                        f"offset:page_id:title per line: {fix}"
                    )
                if not line:
                    continue
                offset, _, rest = line.partition(b":")
                page_id, sep, _ = rest.partition(b":")
                # bytes.isdigit is ASCII-only; at most 19 digits, so int() stays cheap and fits int64.
                if not (offset.isdigit() and page_id.isdigit() and sep) or max(len(offset), len(page_id)) > 19:
                    raise DataError(f"{index}:{lineno}: expected offset:page_id:title, got {shown(line[:80])}; {fix}")
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
    except DECOMPRESSION_ERRORS as e:
        raise DataError(
            f"{index}:{lineno + 1}: decompression failed ({_reason(e)}); the index is damaged or truncated: {fix}"
        ) from None
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
    fix: str = REPLACE,
) -> Chunk:
    """Parse the pages of one byte range of a multistream dump (a pure function).

    The range holds whole bz2 streams of ``<page>`` elements (``stream_ranges``).
    Pass ``drop_prefixes_from(read_siteinfo(path))`` for a non-English dump: its
    ``<siteinfo>`` lives in the first stream, outside any page range. ``fix``: what to
    do about a damaged dump, for error messages.
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
    pages = iter_articles(
        body, source=where, namespaces=namespaces, min_chars=min_chars, drop_prefixes=drop_prefixes, stats=stats,
        fix=fix,
    )
    return Chunk(list(pages), stats)


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
    fix = damaged_fix(params.url, dump, "corpus.wikipedia.url")  # fetch a downloaded dump again, not a local one
    if params.index_url is None:
        with open_dump(dump, fix=fix) as stream:
            yield from iter_articles(
                stream, source=str(dump), namespaces=params.namespaces, min_chars=params.min_chars, stats=stats,
                fix=fix,
            )
        return
    index = fetch(params.index_url, params.cache_dir, retries=params.retries, timeout=params.timeout)
    drop = drop_prefixes_from(read_siteinfo(dump, fix))
    for start, end in stream_ranges(index, dump, damaged_fix(params.index_url, index, "corpus.wikipedia.index_url")):
        chunk = pages_in_range(
            dump, start, end, namespaces=params.namespaces, min_chars=params.min_chars, drop_prefixes=drop, fix=fix
        )
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
