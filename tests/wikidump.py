"""Build a real multistream Wikipedia dump (and its index) from a plain ``pages-articles`` dump.

A multistream dump is what dumps.wikimedia.org publishes as ``…-multistream.xml.bz2``: the
``<siteinfo>`` header as one bz2 stream, the pages in groups (100 there) compressed as one
stream each, and ``</mediawiki>`` as a last stream, concatenated; its index
``…-multistream-index.txt.bz2`` has one line ``offset:page_id:title`` per page, the offset
being where its stream starts. Used by tests/test_dask_preprocess.py and bench/preprocess.py.
"""

from __future__ import annotations

import bz2
import re
from pathlib import Path

_PAGE = re.compile(rb"  <page>")
_ID = re.compile(rb"<id>(\d+)</id>")
_TITLE = re.compile(rb"<title>(.*?)</title>")


def build_multistream(
    src: Path, dest: Path, per_stream: int = 10, copies: int = 1, name: str = "enwiki-multistream"
) -> tuple[Path, Path, int]:
    """Write ``dest/<name>.xml.bz2`` and ``dest/<name>-index.txt.bz2`` from the pages of ``src``.

    ``copies`` > 1 repeats the pages with page ids shifted by 10**7 per copy (a larger
    dump with distinct ids, hence its own holdout draws). Returns the two paths and the
    decompressed XML size in bytes.
    """
    xml = bz2.decompress(src.read_bytes())
    first = xml.index(b"  <page>")
    footer = xml.rindex(b"</mediawiki>")
    starts = [m.start() for m in _PAGE.finditer(xml)]
    pages = [xml[a:b] for a, b in zip(starts, starts[1:] + [footer])]
    if copies > 1:
        pages = [
            _ID.sub(lambda m, k=k: b"<id>%d</id>" % (int(m.group(1)) + k * 10_000_000), page, count=1)
            for k in range(copies)
            for page in pages
        ]
    dest.mkdir(parents=True, exist_ok=True)
    out = bytearray(bz2.compress(xml[:first]))
    lines = []
    size = first + len(xml) - footer
    for i in range(0, len(pages), per_stream):
        group = pages[i : i + per_stream]
        for page in group:
            pid = _ID.search(page).group(1).decode()  # the page's own id: the first <id> in it
            title = _TITLE.search(page).group(1).decode("utf-8")
            lines.append(f"{len(out)}:{pid}:{title}\n")
        body = b"".join(group)
        size += len(body)
        out += bz2.compress(body, 9)
    out += bz2.compress(xml[footer:])
    dump, index = dest / f"{name}.xml.bz2", dest / f"{name}-index.txt.bz2"
    dump.write_bytes(bytes(out))
    index.write_bytes(bz2.compress("".join(lines).encode("utf-8")))
    return dump, index, size
