"""The arXiv source, replaying the real API responses in ../shared/data/arxiv-atom/ from a local server."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from bench.harness import section
from pipeline.errors import DataError, ParamsError
from pipeline.params import ArxivParams
from pipeline.sources import arxiv
from tests.httpserver import HTTPTestServer

PATH = "/api/query"
DEFAULT_QUERY = "((cat:cs.LG OR cat:cs.NE OR cat:math.OC) AND (all:neural OR all:network OR all:deep))"
# Four real 2016 responses (page size 10; the first says totalResults 31), served as
# pages 0, 10, 20 and 30 of one query. They overlap, as shifting results do: 12 distinct papers.
PAGES = {
    "0": "search_au_del_maestro.xml",
    "10": "search_au_del_maestro_ANDNOT_ti_checkerboard_OR_ti_Pyrochlore.xml",
    "20": "search_au_del_maestro_AND_ti_quantum_criticality.xml",  # 2 entries where 10 are due: short
    "30": "search_au_del_maestro_AND_ti_checkerboard.xml",
}


@pytest.fixture(scope="module")
def atom(shared_data: Path) -> Path:
    return shared_data / "arxiv-atom"


@pytest.fixture
def server():
    with HTTPTestServer() as srv:
        yield srv


def _params(srv: HTTPTestServer, tmp_path: Path, **kw) -> ArxivParams:
    kw.setdefault("page_size", 10)
    kw.setdefault("max_results", 100)
    return section("corpus.arxiv", url=srv.url(PATH), cache_dir=str(tmp_path / "cache"), delay=0, **kw)


def _serve_pages(srv: HTTPTestServer, atom: Path) -> None:
    for start, name in PAGES.items():
        srv.route(PATH, (atom / name).read_bytes(), query={"start": start})


def test_query_shape():
    assert arxiv.build_query(("cs.LG", "cs.NE", "math.OC"), ("neural", "network", "deep")) == DEFAULT_QUERY
    assert arxiv.build_query(("cs.CL",), ()) == "(cat:cs.CL)"
    assert arxiv.build_query((), ("neural network",)) == '(all:"neural network")'
    with pytest.raises(ParamsError, match="at least one"):
        arxiv.build_query((), ())


def test_parse_current_feed(atom):
    page = arxiv.parse_feed((atom / "q_testing_s0_m100_cfe7536492ca.body.xml").read_bytes(), "x")
    assert (page.total, page.start, len(page.papers)) == (214881, 0, 100)
    p = page.papers[0]
    assert p.id == "2202.12139v1" and p.base_id == "2202.12139"
    assert p.title == "Testing Deep Learning Models: A First Comparative Study of Multiple Testing Techniques"
    assert p.abstract.startswith("Deep Learning (DL) has revolutionized the capabilities of vision-based systems")
    assert p.categories == ("cs.SE", "cs.LG") and p.primary_category == "cs.SE"
    assert p.published == "2022-02-24T15:05:19Z"
    assert all("\n" not in q.abstract and "  " not in q.abstract for q in page.papers)


def test_parse_2016_feed_normalises_whitespace(atom):
    page = arxiv.parse_feed((atom / "search_au_del_maestro.xml").read_bytes(), "x")
    assert (page.total, len(page.papers)) == (31, 10)
    p = page.papers[0]
    assert p.id == "1201.4869v1" and p.title == "A Luttinger Liquid Core Inside Helium-4 Filled Nanopores"
    assert p.abstract.startswith("As helium-4 is cooled below 2.17 K it undergoes a phase transition to a")
    assert page.papers[1].id == "cond-mat/0412498v1" and page.papers[1].base_id == "cond-mat/0412498"


def test_paging_across_pages(server, atom, tmp_path):
    _serve_pages(server, atom)
    params = _params(server, tmp_path, page_retries=2)
    papers = list(arxiv.iter_papers(params))
    assert [r.query["start"] for r in server.requests] == ["0", "10", "20", "20", "20", "30"]
    first = server.requests[0].query
    assert first["search_query"] == DEFAULT_QUERY
    assert (first["max_results"], first["sortBy"], first["sortOrder"]) == ("10", "submittedDate", "ascending")
    assert len(papers) == 12 == len({p.base_id for p in papers})
    assert papers[0].id == "1201.4869v1"
    assert [p.id for p in papers[10:]] == ["1101.2206v3", "1111.2011v2"]
    # Every page is cached: a rerun asks the server for nothing.
    before = len(server.requests)
    assert list(arxiv.iter_papers(params)) == papers
    assert len(server.requests) == before


def test_max_results_stops_paging(server, atom, tmp_path):
    _serve_pages(server, atom)
    papers = list(arxiv.iter_papers(_params(server, tmp_path, max_results=15)))
    assert [r.query["start"] for r in server.requests] == ["0", "10"]
    assert len(papers) == 12


def test_empty_result(server, atom, tmp_path):
    server.replay_json(atom / "json-fixtures" / "id_0000.0000_s0_m100_8b51d9633a68.json")
    params = _params(server, tmp_path)
    assert list(arxiv.iter_papers(params)) == []
    assert len(server.requests) == 1
    with pytest.raises(DataError, match="matched no papers"):
        list(arxiv.read(params))


def test_error_feed_fails_with_arxivs_message(server, atom, tmp_path):
    recorded = server.replay_json(atom / "json-fixtures" / "id_abc_s0_m100_b79c8dcf6bc3.json")
    assert "id_list=abc" in recorded
    with pytest.raises(arxiv.ArxivError, match="arXiv rejected the query: incorrect id format for abc"):
        list(arxiv.iter_papers(_params(server, tmp_path)))
    assert len(server.requests) == 1  # a 400 is not retried


def test_resume_after_a_failure_midway(server, atom, tmp_path):
    _serve_pages(server, atom)
    server.route(PATH, "overloaded", status=503, query={"start": "10"})
    params = _params(server, tmp_path, retries=1)
    with pytest.raises(DataError, match="failed after 1 retries"):
        list(arxiv.iter_papers(params))
    assert server.count(PATH, start="0") == 1 and server.count(PATH, start="10") == 2
    cached = sorted(p.name for p in (tmp_path / "cache" / "arxiv").glob("*/*.xml"))
    assert cached == ["start-0000000.xml"]

    server.route(PATH, (atom / PAGES["10"]).read_bytes(), query={"start": "10"})  # the server recovers
    papers = list(arxiv.iter_papers(params.model_copy(update={"page_retries": 0})))
    assert len(papers) == 12
    assert server.count(PATH, start="0") == 1  # never fetched again
    assert server.count(PATH, start="10") == 3


def test_page_that_stays_empty_fails_and_names_the_url(server, atom, tmp_path):
    _serve_pages(server, atom)
    empty = (atom / "id_0000.0000_s0_m100_8b51d9633a68.body.xml").read_bytes()
    server.route(PATH, empty, query={"start": "10"})
    with pytest.raises(DataError, match=r"empty page at start=10 of 31 results, 3 times.*rerun later"):
        list(arxiv.iter_papers(_params(server, tmp_path, page_retries=2)))
    assert server.count(PATH, start="10") == 3


def test_polite_delay_between_requests(server, atom, tmp_path):
    _serve_pages(server, atom)
    slept: list[float] = []
    params = _params(server, tmp_path, page_retries=0).model_copy(update={"delay": 3.0})
    list(arxiv.iter_papers(params, sleep=slept.append))
    assert len(slept) == 3  # four requests, a gap before each but the first
    assert all(2.5 < s <= 3.0 for s in slept)


def test_read_builds_the_document_table(server, atom, tmp_path):
    server.route(PATH, (atom / "q_testing_s0_m100_cfe7536492ca.body.xml").read_bytes(), query={"start": "0"})
    params = _params(server, tmp_path, page_size=100, max_results=100, holdout=0.1, seed=1)
    table = pa.concat_tables(arxiv.read(params))
    assert table.num_rows == 100
    assert table.column_names == ["split", "text", "source_id", "title", "categories", "primary_category", "published"]
    assert table["text"][0].as_py().startswith("Deep Learning (DL) has revolutionized")
    assert table["categories"][0].as_py() == ["cs.SE", "cs.LG"]
    splits = table["split"].to_pylist()
    assert set(splits) == {"train", "valid", "test"} and splits.count("train") > 60
    both = pa.concat_tables(arxiv.read(params.model_copy(update={"text": "title_abstract"})))
    assert both["text"][0].as_py().startswith("Testing Deep Learning Models: A First Comparative Study")
    assert both["split"].to_pylist() == splits  # the split depends on the paper, not the text
