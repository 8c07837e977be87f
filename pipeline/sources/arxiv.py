"""arXiv API abstracts: one document per paper, its abstract as the text.

    corpus:
      source: arxiv
      arxiv:
        categories: [cs.LG, cs.NE, math.OC]
        keywords: [neural, network, deep]

Query. ``search_query=((cat:A OR cat:B …) AND (all:k1 OR all:k2 …))`` against
``export.arxiv.org/api/query`` (multi-word keywords are quoted). The first page's
``opensearch:totalResults`` fixes how many results there are; pages of
``page_size`` (``start``, ``max_results``) follow until that total or
``max_results`` papers. Sorting by submission date, oldest first (the default),
keeps earlier pages stable as new papers arrive.

Politeness. arXiv's terms ask for one request every 3 seconds: ``delay`` seconds
separate consecutive requests (0 in tests). Connection errors, timeouts and 5xx
are retried with backoff (``pipeline.download.request``). The API sometimes
answers with an empty or short page under load: such a page is fetched again up
to ``page_retries`` times; a page that stays short is then accepted (with a
warning), one that stays empty fails, naming the URL.

Errors. A query arXiv rejects comes back as HTTP 400 with an Atom feed whose
single entry is the error (id ``…/api/errors#…``); its message is shown as is,
e.g. ``incorrect id format for abc``. Entities are never resolved: an abstract that
holds an entity reference (``&name;``, declared by a DOCTYPE the real API never
sends) is dropped and counted, and the count is reported, so a feed whose abstracts
were all dropped that way is not mistaken for a query that matched nothing.

Cache. Every accepted page is written to ``<cache_dir>/arxiv/<query hash>/``
(with a ``query.json`` naming it), so a rerun, or a run resumed after a failure,
never fetches a page it already has.

Document table: ``text`` is the abstract, whitespace-normalised (or, with
``text: title_abstract``, the title, a newline, the abstract); ``source_id`` the
versioned arXiv id, ``title``, ``categories`` (list), ``primary_category`` and
``published`` as metadata. Duplicates across pages (results shift while paging)
are dropped by versionless id. ``holdout`` each goes to valid and test, by a hash
of (seed, versionless id).

arXiv abstracts as a language-modelling corpus, and the default query, follow
Abrahams, Hafner, Erwitt & Scarpinelli, *TensorFlow for Machine Intelligence*
(Bleeding Edge Press, 2016), chapter 6.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import requests
from lxml import etree

from pipeline.download import request
from pipeline.errors import DataError, ParamsError, shown
from pipeline.io import atomic_open
from pipeline.params import ArxivParams
from pipeline.progress import Progress
from pipeline.sources import xmlerrors
from pipeline.sources.text import holdout_splits

logger = logging.getLogger(f"rnnlab.{__name__}")

NS = {
    "atom": "http://www.w3.org/2005/Atom",
    "opensearch": "http://a9.com/-/spec/opensearch/1.1/",
    "arxiv": "http://arxiv.org/schemas/atom",
}
BATCH = 5000


class ArxivError(DataError):
    """arXiv answered with an error feed."""


@dataclass(frozen=True)
class Paper:
    id: str  # versioned, e.g. 2202.12139v1 or cond-mat/0412498v1
    title: str
    abstract: str
    categories: tuple[str, ...]
    primary_category: str
    published: str
    refused_entity: str = ""  # the entity whose reference emptied the abstract (refused, never expanded)

    @property
    def base_id(self) -> str:
        """The id without its version suffix: the same paper across versions."""
        head, v, tail = self.id.rpartition("v")
        return head if v and tail.isdigit() and head else self.id


@dataclass(frozen=True)
class Page:
    total: int  # opensearch:totalResults
    start: int  # opensearch:startIndex
    papers: tuple[Paper, ...]


def build_query(categories: tuple[str, ...], keywords: tuple[str, ...]) -> str:
    """``((cat:A OR cat:B) AND (all:k1 OR all:k2))``; either group may be empty, not both."""

    def term(field: str, value: str) -> str:
        value = value.strip()
        return f'{field}:"{value}"' if any(c.isspace() for c in value) else f"{field}:{value}"

    groups = [
        " OR ".join(term(field, v) for v in values if v.strip())
        for field, values in (("cat", categories), ("all", keywords))
    ]
    groups = [f"({g})" for g in groups if g]
    if not groups:
        raise ParamsError("corpus.arxiv: give at least one of categories or keywords")
    return f"({' AND '.join(groups)})" if len(groups) > 1 else groups[0]


def _norm(text: str | None) -> str:
    return " ".join((text or "").split())


def _count(text: str | None, name: str, url: str) -> int:
    """An opensearch count: a whole number (absent: 0), else a DataError naming the element."""
    value = (text or "0").strip() or "0"
    # isascii: str.isdigit accepts "²", which int() refuses; 18 digits keep int() cheap and in int64.
    if not (value.isascii() and value.isdigit() and len(value) <= 18):
        raise DataError(f"{url}: opensearch:{name} is {shown(value, 60)}, not a whole number; is this the arXiv API?")
    return int(value)


def _entity(element: etree._Element | None) -> str:
    """The name of the first entity reference inside ``element`` ("" if none): its text stops there."""
    if element is None:
        return ""
    for node in element.iter(etree.Entity):
        return str(node.name)
    return ""


def parse_feed(body: bytes, url: str) -> Page:
    """Parse one Atom response; raise ArxivError with arXiv's message for an error feed."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        root = etree.fromstring(body, parser=parser)
    except etree.XMLSyntaxError as e:
        problem = xmlerrors.problem(e)
        if problem.entities and not problem.line:
            raise DataError(f"{url}: {xmlerrors.REFUSED} ({problem.message}); the arXiv API never sends one") from None
        raise DataError(
            f"{problem.where(url)}: not an Atom feed ({problem.message}): {shown(body[:200])}; check corpus.arxiv.url"
        ) from None
    entries = root.findall("atom:entry", NS)
    for entry in entries:
        entry_id = entry.findtext("atom:id", "", NS)
        if "/api/errors" in entry_id:
            message = _norm(entry.findtext("atom:summary", "", NS))
            raise ArxivError(
                f"{url}: arXiv rejected the query: {message if len(message) <= 300 else message[:299] + '…'} "
                f"({shown(entry_id, 120)}); fix corpus.arxiv in params.yaml"
            )
    total = root.findtext("opensearch:totalResults", None, NS)
    if total is None:
        raise DataError(f"{url}: the feed has no opensearch:totalResults; is this the arXiv API?")
    start = root.findtext("opensearch:startIndex", "0", NS)
    counts = _count(total, "totalResults", url), _count(start, "startIndex", url)
    papers = []
    for entry in entries:
        raw_id = _norm(entry.findtext("atom:id", "", NS))
        primary = entry.find("arxiv:primary_category", NS)
        summary = entry.find("atom:summary", NS)
        # Entities stay unresolved, so findtext would return the abstract cut at the reference:
        # such an abstract is refused whole (and counted by read), not kept truncated.
        refused = _entity(summary)
        papers.append(
            Paper(
                id=raw_id.split("/abs/", 1)[-1],
                title=_norm(entry.findtext("atom:title", "", NS)),
                abstract="" if refused else _norm(summary.text if summary is not None else ""),
                categories=tuple(c.get("term", "") for c in entry.iterfind("atom:category", NS)),
                primary_category=primary.get("term", "") if primary is not None else "",
                published=_norm(entry.findtext("atom:published", "", NS)),
                refused_entity=refused,
            )
        )
    return Page(*counts, tuple(papers))


class _Client:
    """Fetches pages with a polite gap between requests, and keeps every accepted page on disk."""

    def __init__(
        self, params: ArxivParams, query: str, session: requests.Session | None, sleep: Callable[[float], None]
    ) -> None:
        self.params = params
        self.query = query
        self.session = session or requests.Session()
        self.sleep = sleep
        self._last: float | None = None
        spec = {
            "url": params.url,
            "search_query": query,
            "sortBy": params.sort_by,
            "sortOrder": params.sort_order,
            "max_results": params.page_size,
        }
        key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode("utf-8")).hexdigest()[:16]
        self.folder = Path(params.cache_dir) / "arxiv" / key
        self.folder.mkdir(parents=True, exist_ok=True)
        if not (self.folder / "query.json").exists():
            with atomic_open(self.folder / "query.json", "w", encoding="utf-8") as f:
                json.dump(spec, f, indent=2, sort_keys=True)
        self.requests = 0

    def url(self, start: int) -> str:
        req = requests.Request("GET", self.params.url, params=self._query(start)).prepare()
        return req.url or self.params.url

    def _query(self, start: int) -> dict[str, str | int]:
        return {
            "search_query": self.query,
            "start": start,
            "max_results": self.params.page_size,
            "sortBy": self.params.sort_by,
            "sortOrder": self.params.sort_order,
        }

    def cached(self, start: int) -> Page | None:
        path = self.folder / f"start-{start:07d}.xml"
        return parse_feed(path.read_bytes(), str(path)) if path.exists() else None

    def keep(self, start: int, body: bytes) -> None:
        with atomic_open(self.folder / f"start-{start:07d}.xml", "wb") as f:
            f.write(body)

    def fetch(self, start: int) -> tuple[Page, bytes]:
        if self._last is not None and self.params.delay > 0:
            wait = self.params.delay - (time.monotonic() - self._last)
            if wait > 0:
                self.sleep(wait)
        try:
            r = request(
                self.params.url,
                params=self._query(start),
                retries=self.params.retries,
                timeout=self.params.timeout,
                backoff=self.params.delay,
                session=self.session,
                sleep=self.sleep,
            )
        finally:
            self._last = time.monotonic()
            self.requests += 1
        if r.status_code != 200:
            if b"<feed" in r.content[:2000]:
                parse_feed(r.content, r.url)  # raises arXiv's own message if it is an error feed
            raise DataError(f"{r.url}: HTTP {r.status_code} {r.reason}; check corpus.arxiv.url")
        return parse_feed(r.content, r.url), r.content


def iter_papers(
    params: ArxivParams, *, session: requests.Session | None = None, sleep: Callable[[float], None] = time.sleep
) -> Iterator[Paper]:
    """Every paper of the query, in result order, without duplicates (cached pages first)."""
    client = _Client(params, build_query(params.categories, params.keywords), session, sleep)
    seen: set[str] = set()
    total: int | None = None
    start = 0
    # Progress through the results: up to max_results, until the first page says how many there are.
    with Progress("corpus arxiv", params.max_results, unit="results", logger=logger) as progress:
        while True:
            limit = params.max_results if total is None else min(params.max_results, total)
            if start >= limit:
                return
            page = client.cached(start)
            if page is None:
                page = _fetch_page(client, start, total)
            if total is None:
                total = page.total
                progress.set_total(min(params.max_results, total))
            for paper in page.papers:
                if paper.base_id not in seen:
                    seen.add(paper.base_id)
                    yield paper
            start += params.page_size
            progress.set(min(start, min(params.max_results, total)))


def _fetch_page(client: _Client, start: int, total: int | None) -> Page:
    """Fetch the page at ``start``, again while it is empty or short; keep it on disk once accepted."""
    params = client.params
    tries = params.page_retries + 1
    for attempt in range(1, tries + 1):
        page, body = client.fetch(start)
        known = total if total is not None else page.total
        want = max(0, min(params.page_size, min(params.max_results, known) - start))
        if len(page.papers) >= want:
            break
        if attempt < tries:
            continue
        if not page.papers:
            raise DataError(
                f"{client.url(start)}: arXiv returned an empty page at start={start} of {known} results, "
                f"{tries} times; the {start // params.page_size} pages before it are cached in {client.folder}: "
                "rerun later to resume"
            )
        logger.warning(
            f"arxiv: page at start={start} has {len(page.papers)} of {want} entries after {tries} tries; keeping it"
        )
    client.keep(start, body)
    return page


def _holdout_index(ids: list[str]) -> np.ndarray:
    """A stable 64-bit number per paper id (its hash), for holdout_splits."""
    return np.array(
        [int.from_bytes(hashlib.blake2b(i.encode("utf-8"), digest_size=8).digest(), "little") for i in ids],
        dtype=np.uint64,
    )


def papers_table(papers: list[Paper], params: ArxivParams) -> pa.Table:
    """A document-table batch of papers."""
    split = holdout_splits(params.seed, _holdout_index([p.base_id for p in papers]), params.holdout)
    if params.text == "title_abstract":
        texts = [f"{p.title}\n{p.abstract}" for p in papers]
    else:
        texts = [p.abstract for p in papers]
    return pa.table(
        {
            "split": pa.array(split, pa.string()),
            "text": pa.array(texts, pa.string()),
            "source_id": pa.array([p.id for p in papers], pa.string()),
            "title": pa.array([p.title for p in papers], pa.string()),
            "categories": pa.array([list(p.categories) for p in papers], pa.list_(pa.string())),
            "primary_category": pa.array([p.primary_category for p in papers], pa.string()),
            "published": pa.array([p.published for p in papers], pa.string()),
        }
    )


def read(params: ArxivParams) -> Iterator[pa.Table]:
    """The query's papers as document-table batches."""
    batch: list[Paper] = []
    count = 0
    refused: list[str] = []  # the entity of each abstract dropped for holding one
    for paper in iter_papers(params):
        if paper.refused_entity:
            refused.append(paper.refused_entity)
            continue
        if not paper.abstract:
            continue
        batch.append(paper)
        count += 1
        if len(batch) == BATCH:
            yield papers_table(batch, params)
            batch = []
    if batch:
        yield papers_table(batch, params)
    if refused:
        name = refused[0] if len(refused[0]) <= 40 else refused[0][:39] + "…"
        what = (
            f"{len(refused)} abstract{'s' if len(refused) > 1 else ''} held an entity reference "
            f"(&{name};{' and others' if len(set(refused)) > 1 else ''}), which this reader refuses to expand"
        )
        if count == 0:
            raise DataError(
                f"arxiv: {what}, and no other paper was left: the feed at {params.url} declares entities, which "
                "the arXiv API never does; check corpus.arxiv.url"
            )
        logger.warning(f"arxiv: dropped {what}; {count} papers kept")
    if count == 0:
        raise DataError(
            f"arxiv: the query {build_query(params.categories, params.keywords)!r} matched no papers; "
            "widen corpus.arxiv.categories or keywords"
        )
