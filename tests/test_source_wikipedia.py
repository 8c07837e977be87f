"""The Wikipedia source on the real dumps in ../shared/data/wikipedia-xml/, and crafted wikitext."""

from __future__ import annotations

import bz2
import itertools
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from bench.harness import section
from pipeline.errors import DataError
from pipeline.sources import dumpfiles, wikimarkup
from pipeline.sources import wikipedia as wiki
from tests.httpserver import HTTPTestServer

ENWIKI = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
TABLES = "enwiki-table-markup.xml.bz2"
BGWIKI = "bgwiki-latest-pages-articles-shortened.xml.bz2"
FOWIKI = "fowiki-macbre-dump.xml.bz2"

# Computed once, independently of pipeline/, with the standard library only:
#   root = xml.etree.ElementTree.parse(bz2.open(path)).getroot(); for each {ns}page:
#   ns = page.findtext("{ns}ns"); redirect = page.find("{ns}redirect") is not None
# (every redirect also starts its text with "#REDIRECT"). kept = ns 0 and not a redirect;
# redirects = ns 0 redirects; other = pages outside ns 0 (one enwiki ns-4 page is also a redirect).
EXPECTED = {
    ENWIKI: {"pages": 206, "kept": 106, "redirects": 99, "other_namespace": 1},
    TABLES: {"pages": 5, "kept": 5, "redirects": 0, "other_namespace": 0},
    BGWIKI: {"pages": 3, "kept": 1, "redirects": 0, "other_namespace": 2},
    FOWIKI: {"pages": 2, "kept": 1, "redirects": 0, "other_namespace": 1},
}
MARKUP_LEFT = ("{{", "}}", "[[", "]]", "{|", "|}", "<ref", "</ref", "'''", "<!--")


@pytest.fixture(scope="module")
def dumps(shared_data: Path) -> Path:
    return shared_data / "wikipedia-xml"


def _articles(path: Path, **kw) -> tuple[list[wiki.Article], wiki.Stats]:
    stats = wiki.Stats()
    with dumpfiles.open_dump(path) as stream:
        articles = list(wiki.iter_articles(stream, source=str(path), stats=stats, **kw))
    return articles, stats


@pytest.fixture(scope="module")
def enwiki(dumps: Path) -> list[wiki.Article]:
    return _articles(dumps / ENWIKI)[0]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_exact_counts_per_real_dump(dumps, name):
    articles, stats = _articles(dumps / name)
    want = EXPECTED[name]
    assert {k: getattr(stats, k) for k in want} == want
    assert stats.short == 0
    assert len(articles) == want["kept"]


@pytest.mark.slow
@pytest.mark.parametrize("decoder", ["bzip2", "thread", "inline"])
def test_every_decoder_gives_the_same_articles(dumps, enwiki, decoder):
    if decoder == "bzip2" and shutil.which("bzip2") is None:
        pytest.skip("no bzip2 program here")
    stats = wiki.Stats()
    with dumpfiles.open_dump(dumps / ENWIKI, decoder=decoder) as stream:
        assert list(wiki.iter_articles(stream, source="x", stats=stats)) == enwiki


def test_enwiki_fragment_is_plain_prose(enwiki):
    text = "\n".join(a.text for a in enwiki)
    for token in MARKUP_LEFT:
        assert token not in text, token
    assert not re.search(r"^\s*[|!]", text, re.MULTILINE), "a table row survived"
    assert "thumb|" not in text and "Category:" not in text
    first = enwiki[0]
    assert (first.page_id, first.title) == (12, "Anarchism")
    assert first.text.startswith("Anarchism is a political philosophy that advocates self-governed societies")
    # Inline {{lang|grc|…}} keeps its text; headings stay as their own lines.
    assert "derived respectively from the Greek ἀναρχία, i.e. anarchy" in first.text
    assert "\nEtymology and terminology\n" in first.text
    assert all(a.text.strip() == a.text and "\n\n" not in a.text for a in enwiki)


def test_bgwiki_utf16_is_read_as_bulgarian(dumps):
    with bz2.open(dumps / BGWIKI) as f:
        assert f.read(2) == b"\xff\xfe"  # the fixture really is UTF-16LE with a BOM
    (article,), _ = _articles(dumps / BGWIKI)
    assert article.title == "Григориански календар"
    assert article.page_id == 558
    assert article.text.startswith(
        "Григорианският календар (понякога наричан и Грегориански календар, „нов стил“) е съвременният "
        "международно признат светски календар, на който се основава и международният стандарт ISO 8601."
    )
    for token in MARKUP_LEFT + ("File:", "Файл:", "Категория:", "thumb"):
        assert token not in article.text, token


def test_table_heavy_dump_is_stripped_cleanly(dumps):
    articles, _ = _articles(dumps / TABLES)
    assert [a.title for a in articles] == [
        "Constructive vote of no confidence",
        "List of Prison Break characters",
        "Academy Award for Best Production Design",
        "Economy of Estonia",
        "Brahui language",
    ]
    for a in articles:
        for token in MARKUP_LEFT + ("||", "!!", "colspan", "rowspan", "style=", "class=", "wikitable"):
            assert token not in a.text, (a.title, token)
        assert not re.search(r"^\s*[|!]", a.text, re.MULTILINE), a.title
    assert articles[0].text.startswith(
        "The constructive vote of no confidence (in German: konstruktives Misstrauensvotum, in Spanish: "
        "moción de censura constructiva) is a variation on the motion of no confidence"
    )


def test_namespace_filter_is_configurable(dumps):
    _, stats = _articles(dumps / FOWIKI, namespaces=(0, 8))
    assert stats.kept == 2 and stats.other_namespace == 0
    _, stats = _articles(dumps / ENWIKI, namespaces=(4,))
    assert (stats.kept, stats.redirects, stats.other_namespace) == (0, 1, 205)


def test_min_chars_drops_short_pages(dumps):
    articles, stats = _articles(dumps / ENWIKI, min_chars=10_000)
    assert stats.kept + stats.short == 106 and stats.short > 0
    assert all(len(a.text) >= 10_000 for a in articles)


# --- localized link prefixes -----------------------------------------------------------


def test_localized_file_prefix_from_siteinfo():
    drop = wiki.drop_prefixes_from([("6", "Файл"), ("14", "Категория"), ("0", ""), ("4", "Уикипедия")])
    assert "файл" in drop and "категория" in drop and "уикипедия" not in drop
    assert wikimarkup.strip_markup("а [[Файл:X.jpg|thumb|[[b]]]] б [[Категория:Y]]", drop) == "а б"


# --- security, errors, memory ------------------------------------------------------------


def _page(pid: int, title: str, text: str, ns: int = 0) -> str:
    return (
        f"<page><title>{title}</title><ns>{ns}</ns><id>{pid}</id>"
        f'<revision><id>1</id><text xml:space="preserve">{text}</text></revision></page>'
    )


def test_entities_are_never_resolved(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE")
    xml = (
        f'<?xml version="1.0"?><!DOCTYPE mediawiki [<!ENTITY xxe SYSTEM "{secret.as_uri()}">'
        '<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        f"<mediawiki>{_page(1, 'T', 'before &xxe; &b; after')}</mediawiki>"
    )
    path = tmp_path / "evil.xml"
    path.write_text(xml)
    # Not expanded, and not read at all: a dump that declares entities is refused, naming the
    # line of the first reference (the page's text is on line 1 here).
    refused = r"evil\.xml:1: the file declares entities \(a DOCTYPE\), which this reader refuses \(it declares 'xxe'"
    with pytest.raises(DataError, match=refused) as e:
        _articles(path)
    assert "TOP-SECRET" not in str(e.value) and "aaaa" not in str(e.value)


def test_malformed_xml_names_the_file(tmp_path):
    path = tmp_path / "bad.xml"
    path.write_text("<mediawiki><page><title>x</title></mediawiki>")
    with pytest.raises(DataError, match=r"bad\.xml: not a well-formed MediaWiki XML dump"):
        _articles(path)


@pytest.mark.parametrize("decoder", ["bzip2", "thread", "inline"])
def test_truncated_bz2_is_a_clear_error(dumps, tmp_path, decoder):
    if decoder == "bzip2" and shutil.which("bzip2") is None:
        pytest.skip("no bzip2 program here")
    data = (dumps / ENWIKI).read_bytes()
    path = tmp_path / "cut.xml.bz2"
    path.write_bytes(data[: len(data) // 2])
    with (
        pytest.raises(DataError, match=r"cut\.xml\.bz2: .*(damaged|well-formed)"),
        dumpfiles.open_dump(path, decoder=decoder) as stream,
    ):
        list(wiki.iter_articles(stream, source=str(path)))


@pytest.mark.slow
def test_memory_stays_flat_on_a_large_stream():
    """64 MB of XML streamed through iter_articles: RSS must not grow with the input."""
    script = textwrap.dedent(
        """
        import resource, sys
        from pipeline.sources.wikipedia import iter_articles

        PAGE = ("<page><title>P</title><ns>0</ns><id>{}</id><revision><text>"
                + "Plain prose with a [[link]] and {{tmpl}}. " * 200 + "</text></revision></page>\\n")

        class Gen:
            def __init__(self, pages):
                self.parts = iter([b"<mediawiki>"] + [PAGE.format(i).encode() for i in range(pages)]
                                  + [b"</mediawiki>"])
                self.buf = b""
            def read(self, n):
                while len(self.buf) < n:
                    nxt = next(self.parts, None)
                    if nxt is None:
                        break
                    self.buf += nxt
                out, self.buf = self.buf[:n], self.buf[n:]
                return out

        pages = 64_000_000 // len(PAGE)
        rss = []
        for i, article in enumerate(iter_articles(Gen(pages), source="gen")):
            if i in (pages // 8, pages - 1):
                rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        print(pages, rss[0], rss[1])
        """
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True)
    pages, early_kb, late_kb = map(int, out.stdout.split())
    assert pages > 5000
    assert late_kb - early_kb < 16_000, f"RSS grew from {early_kb} kB to {late_kb} kB"


# --- multistream -------------------------------------------------------------------------


def _multistream(src: Path, dest: Path, per_stream: int = 25) -> tuple[Path, Path, list[int]]:
    """Rebuild a dump as a real multistream file: header stream, page streams, footer stream, index."""
    xml = bz2.decompress(src.read_bytes())
    first = xml.index(b"  <page>")
    starts = [m.start() for m in re.finditer(rb"  <page>", xml)]
    footer = xml.rindex(b"</mediawiki>")
    pages = [xml[a:b] for a, b in zip(starts, starts[1:] + [footer])]
    out = bytearray(bz2.compress(xml[:first]))
    index_lines = []
    offsets = []
    for i in range(0, len(pages), per_stream):
        offsets.append(len(out))
        group = pages[i : i + per_stream]
        for page in group:
            pid = re.search(rb"<id>(\d+)</id>", page).group(1).decode()
            title = re.search(rb"<title>(.*?)</title>", page).group(1).decode()
            index_lines.append(f"{len(out)}:{pid}:{title}\n")
        out += bz2.compress(b"".join(group))
    out += bz2.compress(xml[footer:])
    dump = dest / "enwiki-multistream.xml.bz2"
    dump.write_bytes(bytes(out))
    index = dest / "enwiki-multistream-index.txt.bz2"
    index.write_bytes(bz2.compress("".join(index_lines).encode("utf-8")))
    return dump, index, offsets


@pytest.mark.slow
def test_multistream_ranges_and_pure_range_parsing(dumps, enwiki, tmp_path):
    dump, index, offsets = _multistream(dumps / ENWIKI, tmp_path)
    ranges = list(dumpfiles.stream_ranges(index, dump))
    assert [r[0] for r in ranges] == offsets
    assert ranges[-1][1] == dump.stat().st_size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    chunks = [wiki.pages_in_range(dump, start, end) for start, end in ranges]
    assert [a for c in chunks for a in c.articles] == enwiki
    total = wiki.Stats()
    for c in chunks:
        total.add(c.stats)
    assert (total.pages, total.kept, total.redirects, total.other_namespace) == (206, 106, 99, 1)
    # Any one range alone, in any order: the same pages as in the sequential read.
    start, end = ranges[3]
    assert wiki.pages_in_range(dump, start, end).articles == chunks[3].articles
    # The multistream file is also a valid plain .bz2 (concatenated streams).
    assert _articles(dump)[0] == enwiki


@pytest.mark.slow
def test_multistream_index_errors(dumps, tmp_path):
    dump, _index, _ = _multistream(dumps / ENWIKI, tmp_path)
    bad = tmp_path / "bad-index.txt"
    bad.write_text("600:12:Anarchism\nnot an index line\n")
    with pytest.raises(DataError, match=r"bad-index\.txt:2: expected offset:page_id:title"):
        list(dumpfiles.stream_ranges(bad, dump))
    bad.write_text(f"{dump.stat().st_size + 5}:12:Anarchism\n")
    with pytest.raises(DataError, match="does not belong to this dump"):
        list(dumpfiles.stream_ranges(bad, dump))
    with pytest.raises(DataError, match="not a bz2 stream"):
        wiki.pages_in_range(dump, 1, 500)


# --- the source ----------------------------------------------------------------------------


def _table(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables)


@pytest.mark.slow
def test_read_over_http_with_splits_and_cache(dumps, enwiki, tmp_path):
    cache = tmp_path / "cache"
    with HTTPTestServer(root=dumps) as srv:
        params = section("corpus.wikipedia", url=srv.url(ENWIKI), cache_dir=str(cache), holdout=0.1, seed=3)
        table = _table(list(wiki.read(params)))
        assert srv.count(f"/{ENWIKI}") == 1
        again = _table(list(wiki.read(params)))
        assert srv.count(f"/{ENWIKI}") == 1  # served from the cache
    assert table.equals(again)
    assert table.column_names == ["split", "text", "source_id", "title"]
    assert table["text"].to_pylist() == [a.text for a in enwiki]
    assert table["source_id"].to_pylist() == [str(a.page_id) for a in enwiki]
    splits = table["split"].to_pylist()
    assert {s: splits.count(s) for s in set(splits)}.keys() == {"train", "valid", "test"}
    assert splits.count("train") > 70
    # The split of a page depends on (seed, page id) only: a different max_articles keeps it.
    params10 = params.model_copy(update={"max_articles": 10})
    head = _table(list(wiki.read(params10)))
    assert head.num_rows == 10
    assert head["split"].to_pylist() == splits[:10]


@pytest.mark.slow
def test_read_multistream_via_index_url(dumps, enwiki, tmp_path):
    dump, index, _ = _multistream(dumps / ENWIKI, tmp_path / "www" if (tmp_path / "www").mkdir() is None else None)
    with HTTPTestServer(root=tmp_path / "www") as srv:
        params = section(
            "corpus.wikipedia", url=srv.url(dump.name), index_url=srv.url(index.name), cache_dir=str(tmp_path / "c")
        )
        table = _table(list(wiki.read(params)))
    assert table["text"].to_pylist() == [a.text for a in enwiki]


def test_read_reports_a_404(tmp_path):
    with HTTPTestServer(root=tmp_path) as srv:
        params = section("corpus.wikipedia", url=srv.url("nope.xml.bz2"), cache_dir=str(tmp_path / "c"))
        with pytest.raises(DataError, match="HTTP 404"):
            list(wiki.read(params))
