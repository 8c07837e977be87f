"""Corpus sources. Each module's ``read(params)`` yields document-table batches.

A batch is a ``pa.Table`` with ``split`` and ``text`` and any optional columns
(see ``pipeline.docs``); the corpus stage numbers the rows and writes them.
Modules are imported only when chosen, so one source's dependencies never
slow down or break another.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

# corpus.source -> module. params.CorpusParams.source lists the same names.
SOURCES: dict[str, str] = {
    "grammar": "pipeline.sources.grammar",
    "text": "pipeline.sources.text",
    "wikipedia": "pipeline.sources.wikipedia",
    "arxiv": "pipeline.sources.arxiv",
    "imdb": "pipeline.sources.imdb",
    "ocr": "pipeline.sources.ocr",
}


def reader(name: str) -> Callable[[Any], Iterator[pa.Table]]:
    """The ``read`` function of source ``name``."""
    return importlib.import_module(SOURCES[name]).read
