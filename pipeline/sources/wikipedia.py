"""Wikipedia XML dumps: ``pages-articles*.xml.bz2`` → plain-prose documents.

    corpus:
      source: wikipedia
      wikipedia:
        url: https://dumps.wikimedia.org/simplewiki/latest/simplewiki-latest-pages-articles.xml.bz2

Reading. The dump (``.xml.bz2`` or plain ``.xml``; the format is sniffed from
its first bytes, not its name) is opened by ``pipeline.sources.dumpfiles.open_dump``,
which decompresses it on another core, and streams through ``lxml.etree.iterparse``
on ``{*}page``. Bytes go to lxml undecoded: the XML's own declaration or byte-order
mark decides the encoding (one real fixture is UTF-16LE). The parser never resolves
entities or touches the network. Each page element is cleared and its preceding
siblings deleted, so memory stays flat however large the dump.

Filter. Pages in ``namespaces`` (default: articles, ns 0) that are not
redirects, whose stripped text has at least ``min_chars`` characters.

Markup. ``pipeline.sources.wikimarkup.strip_markup`` turns each page's wikitext
into prose.

Multistream dumps (``…-multistream.xml.bz2`` with ``…-multistream-index.txt.bz2``)
are independent bz2 streams of ~100 pages each. ``stream_ranges`` (in
``pipeline.sources.dumpfiles``) yields their byte ranges from the index and
``pages_in_range`` parses one range: a pure function of (path, start, end, options),
so a scheduler can fan ranges out over workers. ``read`` walks them in order when
``index_url`` is set.

Splits: a ``holdout`` fraction each for valid and test, drawn by hashing
(seed, page id) with ``pipeline.sources.text.holdout_draw``: the same page
lands in the same split whatever the batching, order or worker.

Wikipedia as a corpus for word embeddings follows Abrahams, Hafner, Erwitt &
Scarpinelli, *TensorFlow for Machine Intelligence* (Bleeding Edge Press, 2016),
chapter 6.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import pyarrow as pa
from lxml import etree

from pipeline.download import damaged_fix, fetch, fetch_source
from pipeline.errors import DataError, shown
from pipeline.params import WikipediaParams
from pipeline.progress import Progress
from pipeline.sources import xmlerrors
from pipeline.sources.dumpfiles import (
    DECOMPRESSION_ERRORS,
    REPLACE,
    decompress_streams,
    open_dump,
    open_dump_at,
    reason,
    stream_ranges,
)
from pipeline.sources.text import holdout_splits
from pipeline.sources.wikimarkup import DROP_LINK_PREFIXES, strip_markup

logger = logging.getLogger(f"rnnlab.{__name__}")
BATCH = 1000  # articles per document-table batch
POSITION_EVERY = 64  # articles between reads of the dump's position (a system call) for the progress
MAX_PAGE_ID = 2**63 - 1  # page ids are int64 in the document table and the holdout hash

# The dump's <siteinfo> adds its localized names for these namespaces to DROP_LINK_PREFIXES.
_DROP_NAMESPACE_KEYS = ("-2", "6", "14")  # Media, File, Category


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
            f"{source}: decompression failed ({reason(e)}); the file is damaged or truncated: {fix}"
        ) from None


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
                f"{path}: decompression failed ({reason(e)}); the file is damaged or truncated: {fix}"
            ) from None
    return []


# --- multistream -------------------------------------------------------------------------


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
        data = decompress_streams(f.read(end - start), where)
    first, last = data.find(b"<page>"), data.rfind(b"</page>")
    stats = Stats()
    if first < 0 or last < 0:
        return Chunk([], stats)
    # The pages of a stream have no root element (it is in the first stream): give them one.
    body = io.BytesIO(b"<mediawiki>" + data[first : last + len(b"</page>")] + b"</mediawiki>")
    pages = iter_articles(
        body,
        source=where,
        namespaces=namespaces,
        min_chars=min_chars,
        drop_prefixes=drop_prefixes,
        stats=stats,
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


def _articles(params: WikipediaParams, dump: Path, stats: Stats, progress: Progress | None) -> Iterator[Article]:
    """The dump's kept articles; ``progress`` (in bytes of the dump) is set to how far it was read."""
    fix = damaged_fix(params.url, dump, "corpus.wikipedia.url")  # fetch a downloaded dump again, not a local one
    if params.index_url is None:
        with open_dump_at(dump, fix=fix) as (stream, position):
            articles = iter_articles(
                stream,
                source=str(dump),
                namespaces=params.namespaces,
                min_chars=params.min_chars,
                stats=stats,
                fix=fix,
            )
            for n, article in enumerate(articles, start=1):
                if progress is not None and n % POSITION_EVERY == 0:
                    progress.set(position())
                yield article
        return
    index = fetch(params.index_url, params.cache_dir, retries=params.retries, timeout=params.timeout)
    drop = drop_prefixes_from(read_siteinfo(dump, fix))
    for start, end in stream_ranges(index, dump, damaged_fix(params.index_url, index, "corpus.wikipedia.index_url")):
        chunk = pages_in_range(
            dump, start, end, namespaces=params.namespaces, min_chars=params.min_chars, drop_prefixes=drop, fix=fix
        )
        stats.add(chunk.stats)
        yield from chunk.articles
        if progress is not None:
            progress.set(end)


def read(params: WikipediaParams) -> Iterator[pa.Table]:
    """The dump's articles as document-table batches (``split``, ``text``, ``source_id``, ``title``)."""
    dump = fetch_source(params)
    stats = Stats()
    batch: list[Article] = []
    taken = 0
    # Progress through the dump's compressed bytes; with max_articles, through those articles.
    limit = params.max_articles
    total, unit = (dump.stat().st_size, "B") if limit is None else (limit, "articles")
    with Progress("corpus wikipedia", total, unit=unit, logger=logger) as progress:
        articles = _articles(params, dump, stats, progress if limit is None else None)
        try:
            for article in articles:
                batch.append(article)
                taken += 1
                if len(batch) == BATCH:
                    yield articles_table(batch, params.holdout, params.seed)
                    batch = []
                if limit is not None:
                    progress.update()
                    if taken >= limit:
                        break
        finally:
            articles.close()  # stops the decompressor when max_articles cut the dump short
        if batch:
            yield articles_table(batch, params.holdout, params.seed)
        if limit is None:
            progress.set(total)
    logger.info(
        f"wikipedia: {dump.name}: {stats.pages} pages read, {stats.kept} kept; skipped {stats.redirects} "
        f"redirects, {stats.other_namespace} in other namespaces, {stats.short} too short"
    )
