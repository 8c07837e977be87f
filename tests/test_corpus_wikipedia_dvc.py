"""`dvc repro` through windows with corpus.source: wikipedia, on the real gensim enwiki fragment over HTTP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from bench.harness import copy_repo, run, write_params
from pipeline.io import read_json
from tests.httpserver import HTTPTestServer
from tests.support import ran

ENWIKI = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
# The first 60 articles, 10% each held out by hash(seed 0, page id): 44 train, 7 valid, 9 test
# (counted with pipeline.sources.wikipedia.read directly; the stage must agree).
SPLITS = {"train": 44, "valid": 7, "test": 9}


@pytest.fixture(scope="module")
def served(shared_data: Path):
    with HTTPTestServer(root=shared_data / "wikipedia-xml") as srv:
        yield srv


@pytest.mark.slow
def test_repro_wikipedia_through_windows(served: HTTPTestServer, tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    cache = tmp_path / "downloads"
    overrides = {
        "corpus": {
            "source": "wikipedia",
            "wikipedia": {
                "url": served.url(ENWIKI),
                "cache_dir": str(cache),
                "max_articles": 60,
                "holdout": 0.1,
                "retries": 1,
                "timeout": 10,
            },
        }
    }
    write_params(repo / "params.yaml", overrides)

    out = run(repo, "dvc", "repro", "windows").stdout
    levels = ("word", "char")
    assert ran(out) == {"corpus"} | {f"{s}@{lvl}" for s in ("tokenize", "vocab", "windows") for lvl in levels}
    assert served.count(f"/{ENWIKI}") == 1
    assert (cache / ENWIKI).is_file() and not (repo / "data" / "cache").exists()

    metrics = read_json(repo / "data/metrics/corpus.json")
    assert metrics["source"] == "wikipedia"
    assert {k: v["docs"] for k, v in metrics["splits"].items()} == SPLITS
    assert read_json(repo / "data/corpus/oracle.json")["available"] is False

    docs = pq.read_table(repo / "data/corpus/docs")
    assert docs.column_names == ["doc_id", "split", "text", "source_id", "title"]
    assert docs["title"][0].as_py() == "Anarchism"
    text = "\n".join(docs["text"].to_pylist())
    assert not any(tok in text for tok in ("{{", "}}", "[[", "|}"))

    vocab = read_json(repo / "data/vocab/word.json")["tokens"]
    assert vocab[:3] == ["<pad>", "<unk>", "<eos>"] and "anarchism" in vocab and "the" in vocab
    for level in levels:
        meta = read_json(repo / f"data/windows/{level}/meta.json")
        for split in SPLITS:
            stream = np.load(repo / f"data/windows/{level}/{split}/stream.npy", mmap_mode="r")
            assert len(stream) == meta["splits"][split]["stream_tokens"] > 1000

    # Nothing changed: nothing reruns, and the dump is not fetched again.
    out = run(repo, "dvc", "repro", "windows").stdout
    assert ran(out) == set() and "Data and pipelines are up to date" in out
    assert served.count(f"/{ENWIKI}") == 1
