"""Hostile and broken input: one clear error for every malformed file, and nothing lost.

Every case is built here, in temporary folders, at run time: no file over 1 MB, and nothing
that expands (entities are never expanded; the billion-laughs file is 1 KB). The Wikipedia,
IMDB and params cases run through the real corpus stage (``python -m pipeline.corpus`` in a
throwaway copy of the repository) and must:

- exit with status 2 and print one ``error:`` message, no traceback, of at most a few KB;
- name the file, and the line, the member or the params key, and say what to do;
- leave the previous outputs byte-identical and write nothing anywhere (no temporary folder,
  no cache file, not a byte beside the inputs).

The OCR, arXiv and checkpoint cases run through their real readers, in process.
"""

from __future__ import annotations

import base64
import bz2
import gzip
import hashlib
import io
import os
import re
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from bench.harness import SMALL_CORPUS, copy_repo, load_params, merge, run, section, tool_env, write_params
from pipeline.corpus import write_documents
from pipeline.errors import DataError, ParamsError
from pipeline.params import ArxivParams
from pipeline.sources import arxiv, dumpfiles, ocr
from pipeline.sources import wikipedia as wiki
from tests.httpserver import HTTPTestServer

MESSAGE_BYTES = 4096  # "a few KB", whatever the input

# --- what a stage run may and may not do ------------------------------------------------------


def tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` (but .git) with its content's sha256 ("dir" for folders)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] == ".git":
            continue
        out[str(rel)] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project whose corpus stage has run once (a small grammar corpus): the outputs to keep."""
    root = copy_repo(tmp_path_factory.mktemp("hostile") / "repo")
    write_params(root / "params.yaml", SMALL_CORPUS)
    run(root, sys.executable, "-m", "pipeline.corpus", env=_env(root))
    assert (root / "data/corpus/docs").is_dir()
    return root


def _env(root: Path) -> dict[str, str]:
    # No __pycache__ folders: a failed run must leave the tree exactly as it was.
    return tool_env(PREFECT_HOME=str(root / ".prefect"), PYTHONDONTWRITEBYTECODE="1")


def failed_stage(repo: Path, inputs: Path, *args: str, module: str = "pipeline.corpus") -> str:
    """Run a stage that must fail; check the exit code and that nothing was written; return its message."""
    before_repo, before_inputs = tree(repo), tree(inputs)
    proc = run(repo, sys.executable, "-m", module, *args, env=_env(repo), check=False, timeout=120)
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: "), proc.stderr
    assert len(proc.stderr.encode()) < MESSAGE_BYTES, f"{len(proc.stderr)} bytes: {proc.stderr[:500]}"
    assert tree(repo) == before_repo, "the outputs changed, or a file was left in the repository"
    assert tree(inputs) == before_inputs, "a file was written beside the inputs"
    return proc.stderr


def stage_params(inputs: Path, overrides: dict) -> Path:
    """The real params (the small corpus), with ``overrides``, written beside the inputs (not in the repository)."""
    path = inputs / "params.yaml"
    write_params(path, merge(SMALL_CORPUS, overrides))
    return path


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    return folder


# --- Wikipedia dumps ----------------------------------------------------------------------------


def _page(title: str, page_id: str, text: str) -> str:
    return (
        f"  <page>\n    <title>{title}</title>\n    <ns>0</ns>\n    <id>{page_id}</id>\n"
        "    <revision>\n      <id>1</id>\n"
        f'      <text xml:space="preserve">{text}</text>\n    </revision>\n  </page>\n'
    )


def _dump(*pages: str, head: str = "") -> bytes:
    body = head + '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">\n' + "".join(pages) + "</mediawiki>\n"
    return body.encode("utf-8")


GOOD = _page("Good", "1", "Plain prose with a [[link]].")
BAD_ID_LINE = 1 + GOOD.count("\n") + 1  # the <page> line of the page after GOOD
# The line of a page's text, in a dump whose DOCTYPE takes line 1 (and <mediawiki> line 2).
XXE_LINE = 2 + next(i for i, line in enumerate(GOOD.split("\n"), 1) if "<text" in line)


def _billion_laughs(levels: int = 9) -> str:
    """A DOCTYPE whose entities would expand to 3 * 10**levels bytes: never expanded here."""
    decls = '<!ENTITY a0 "lol">' + "".join(f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, levels + 1))
    return f'<?xml version="1.0"?>\n<!DOCTYPE mediawiki [\n{decls}\n]>\n'


def _truncated_bz2(xml: bytes) -> bytes:
    data = bz2.compress(xml)
    return data[: len(data) // 2]


def _bad_crc_gzip(xml: bytes) -> bytes:
    data = bytearray(gzip.compress(xml))
    data[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    return bytes(data)


# name -> (file name, bytes, pattern of the message after "error: <file>")
WIKIPEDIA = {
    "page id not an integer": (
        "dump.xml",
        _dump(GOOD, _page("Bad", "12a", "Text.")),
        rf":{BAD_ID_LINE}: page 'Bad' has <id> '12a', not a whole number from 0 to 2\^63-1",
    ),
    "page id beyond int64": (
        "dump.xml",
        _dump(GOOD, _page("Big", "99999999999999999999", "Text.")),
        rf":{BAD_ID_LINE}: page 'Big' has <id> '99999999999999999999', not a whole number",
    ),
    "billion laughs": (
        "laughs.xml",
        _dump(_page("Lol", "1", "a &a9; b"), head=_billion_laughs()),
        r": the file declares entities \(a DOCTYPE\), which this reader refuses .*set corpus\.wikipedia\.url",
    ),
    "external entity": (
        "xxe.xml",
        _dump(
            _page("X", "1", "before &xxe; after"), head='<!DOCTYPE m [<!ENTITY xxe SYSTEM "file:///etc/hostname">]>\n'
        ),
        rf":{XXE_LINE}: the file declares entities \(a DOCTYPE\), which this reader refuses \(it declares 'xxe'\)",
    ),
    "undeclared entity": (
        "undeclared.xml",
        _dump(GOOD, _page("U", "2", "a &nope; b")),
        r":\d+:\d+: an entity reference this reader refuses \(Entity 'nope' not defined\)",
    ),
    "malformed XML": (
        "broken.xml",
        _dump(GOOD).replace(b"</title>", b"</titel>", 1),
        r": not a well-formed MediaWiki XML dump \(line 3, column \d+: Opening and ending tag mismatch",
    ),
    "truncated bz2": (
        "cut.xml.bz2",
        _truncated_bz2(_dump(*[_page(f"P{i}", str(i), "Some text. " * 50) for i in range(1, 200)])),
        r": (bzip2 failed|decompression failed|bz2 decompression failed).*damaged or truncated",
    ),
    "gzip with a bad CRC": (
        "crc.xml.gz",
        _bad_crc_gzip(_dump(GOOD)),
        r": decompression failed \(CRC check failed.*\); the file is damaged or truncated",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(WIKIPEDIA))
def test_wikipedia_through_the_corpus_stage(repo: Path, inputs: Path, case: str) -> None:
    name, data, pattern = WIKIPEDIA[case]
    dump = inputs / name
    dump.write_bytes(data)
    assert len(data) < 1 << 20
    params = stage_params(inputs, {"corpus": {"source": "wikipedia", "wikipedia": {"url": str(dump)}}})
    message = failed_stage(repo, inputs, "--params", str(params))
    assert re.match(rf"error: {re.escape(str(dump))}{pattern}", message), message
    assert "TOP-SECRET" not in message and "lol" not in message
    if "damaged" in message:  # a local file: replace it, never "download it again"
        assert "is a local file" in message and "corpus.wikipedia.url" in message and "download" not in message


def test_a_damaged_download_is_fetched_again_but_a_local_file_is_not(tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "cut.xml.bz2").write_bytes(WIKIPEDIA["truncated bz2"][1])
    with HTTPTestServer(root=www) as srv:
        params = section("corpus.wikipedia", url=srv.url("cut.xml.bz2"), cache_dir=str(tmp_path / "cache"))
        with pytest.raises(DataError, match=r"delete .*cut\.xml\.bz2 and rerun to download it again") as e:
            list(wiki.read(params))
    assert "local file" not in str(e.value)


def test_truncated_multistream_index_names_its_line(tmp_path: Path) -> None:
    lines = "".join(f"{600 + 1000 * (i // 100)}:{i}:Title {i}\n" for i in range(1, 20_000)).encode()
    index = tmp_path / "index.txt.bz2"
    index.write_bytes(_truncated_bz2(lines))
    dump = tmp_path / "dump.xml.bz2"
    dump.write_bytes(b"BZh9" + b"\0" * 10_000_000)  # only its size matters here
    with pytest.raises(DataError, match=r"index\.txt\.bz2:\d+: decompression failed .*damaged or truncated"):
        list(dumpfiles.stream_ranges(index, dump))


# --- IMDB archives ------------------------------------------------------------------------------


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


GOOD_REVIEWS = {
    f"aclImdb/{split}/{label}/{i}_{9 if label == 'pos' else 2}.txt": b"A fine film. " * 20
    for split in ("train", "test")
    for label in ("pos", "neg")
    for i in range(3)
}
HUGE_ID = "aclImdb/train/pos/99999999999999999999_9.txt"

# name -> (archive bytes, corpus.imdb overrides, pattern of the message after "error: <archive>")
IMDB = {
    "id beyond int64": (
        _tar_gz({**GOOD_REVIEWS, HUGE_ID: b"Too big an id."}),
        {},
        rf": member '{HUGE_ID}': review id '99999999999999999999' in the file name has over 18 digits",
    ),
    "review over max_review_mb": (
        _tar_gz({**GOOD_REVIEWS, "aclImdb/train/neg/7_1.txt": b"x" * 5000}),
        {"max_review_mb": 0.001},
        r": member 'aclImdb/train/neg/7_1\.txt': a review of 5000 bytes, over corpus\.imdb\.max_review_mb \(0\.001 MB",
    ),
    "truncated gzip": (
        _tar_gz({f"aclImdb/train/pos/{i}_8.txt": base64.b85encode(os.urandom(1500)) for i in range(200)})[:100_000],
        {},
        (
            r": not a readable tar archive \(.*\); the file is damaged or truncated: .* is a local file: "
            r".*corpus\.imdb\.url"
        ),
    ),
    "gzip with a bad CRC": (
        _bad_crc_gzip(gzip.decompress(_tar_gz(GOOD_REVIEWS))),
        {},
        r": not a readable tar archive \('CRC check failed .*after member .*\); the file is damaged",
    ),
    "member escaping the archive": (
        _tar_gz({**GOOD_REVIEWS, "aclImdb/../../evil.txt": b"x"}),
        {},
        r": refusing member 'aclImdb/\.\./\.\./evil\.txt': '\.\.' in its path",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(IMDB))
def test_imdb_through_the_corpus_stage(repo: Path, inputs: Path, case: str) -> None:
    data, overrides, pattern = IMDB[case]
    archive = inputs / "aclImdb_v1.tar.gz"
    archive.write_bytes(data)
    assert len(data) < 1 << 20
    imdb = {"url": str(archive), "sha256": None, **overrides}
    params = stage_params(inputs, {"corpus": {"source": "imdb", "imdb": imdb}})
    message = failed_stage(repo, inputs, "--params", str(params))
    assert re.match(rf"error: {re.escape(str(archive))}{pattern}", message), message
    assert "download" not in message  # a local file


# --- params.yaml --------------------------------------------------------------------------------


def _params_yaml(overrides: dict) -> str:
    """The real params.yaml, shrunk to the small corpus, with ``overrides``, as YAML text."""
    return yaml.safe_dump(merge(load_params(), merge(SMALL_CORPUS, overrides)), sort_keys=False)


def _alias_bomb(levels: int = 9) -> list:
    """Nested lists sharing their items: safe_dump writes them as anchors and aliases (1.5 KB of YAML
    that a walk of 9**9 strings would print)."""
    bomb: list = ["lol"] * 9
    for _ in range(levels - 1):
        bomb = [bomb] * 9
    return bomb


# name -> (params file contents, or None for a folder; pattern of the message after "error: <params>")
PARAMS: dict[str, tuple[Callable[[], bytes] | None, str]] = {
    "latin-1 byte": (
        lambda: b"# caf\xe9\n" + _params_yaml({}).encode(),
        r":1:6: byte 0xe9 is not UTF-8; save the file as UTF-8\n$",
    ),
    "nested 5,000 lists deep": (
        lambda: (_params_yaml({}) + "deep: " + "[" * 5000 + "]" * 5000 + "\n").encode(),
        r": nested too deeply to parse \(Python's recursion limit\); params.yaml needs a few levels\n$",
    ),
    "a folder": (None, r": is a folder, not a file; pass the params file itself \(--params\)\n$"),
    "YAML alias bomb": (
        lambda: _params_yaml({"windows": {"word": {"sentence_end": _alias_bomb()}}}).encode(),
        (
            r" has 9 problems:\n  windows\.word\.sentence_end\[0\]: input should be a valid string, got "
            r"\[\[\[\[.*\(list, 9 items\)\n"
        ),
    ),
    "a long value": (
        lambda: _params_yaml({"corpus": {"grammar": {"seed": "x" * 500_000}}}).encode(),
        (
            r" has 1 problem:\n  corpus\.grammar\.seed: input should be a valid integer, .*got 'xxx.*\.\.\..*' "
            r"\(str, 500000 chars\)\n$"
        ),
    ),
    "an integer of 5,000 digits": (
        lambda: _params_yaml({}).replace("    seed: 0\n", "    seed: " + "9" * 5000 + "\n", 1).encode(),
        r": not valid YAML: a number or date cannot be read \(Exceeds the limit \(4300 digits\).*\); fix that value",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(PARAMS))
def test_params_through_the_corpus_stage(repo: Path, inputs: Path, case: str) -> None:
    make, pattern = PARAMS[case]
    path = inputs / "hostile.yaml"
    if make is None:
        path.mkdir()
    else:
        path.write_bytes(make())
        assert path.stat().st_size < 1 << 20
    message = failed_stage(repo, inputs, "--params", str(path))
    assert re.match(rf"error: {re.escape(str(path))}{pattern}", message), message


# --- OCR letters (the reader and the ocr_data stage) -------------------------------------------


def _letters(words: list[tuple[int, int, int]], first_id: int = 1) -> list[str]:
    """letter.data lines for (word_id, fold, length) words: blank images, ids from ``first_id``."""
    px = "\t".join(["0"] * 128)
    lines, lid = [], first_id
    for word_id, fold, length in words:
        for pos in range(1, length + 1):
            lines.append(f"{lid}\ta\t{lid + 1 if pos < length else -1}\t{word_id}\t{pos}\t{fold}\t{px}\t")
            lid += 1
    return lines


GOOD_WORDS = [(i, i % 10, 3) for i in range(1, 31)]


def _gz(lines: list[str]) -> bytes:
    return gzip.compress(("\n".join(lines) + "\n").encode())


def _with_field(lines: list[str], row: int, field: int, value: str) -> list[str]:
    out = list(lines)
    parts = out[row].split("\t")
    parts[field] = value
    out[row] = "\t".join(parts)
    return out


# name -> (file bytes, OcrParams overrides, pattern after "<file>")
OCR = {
    "truncated gzip": (
        _gz(_letters([(i, i % 10, 3) for i in range(1, 2001)]))[:10_000],
        {},
        (
            r":\d+: gzip decompression failed \(Compressed file ended before the end-of-stream marker was reached\); "
            r"the file is damaged or truncated: .* is a local file: .*point corpus\.ocr\.url at one"
        ),
    ),
    "gzip with a bad CRC": (
        _bad_crc_gzip(gzip.decompress(_gz(_letters(GOOD_WORDS)))),
        {},
        r":\d+: gzip decompression failed \(CRC check failed .*\); the file is damaged or truncated",
    ),
    "id beyond int64": (
        _gz(_with_field(_letters(GOOD_WORDS), 4, 0, "99999999999999999999")),
        {},
        r":5: id '99999999999999999999' does not fit a 64-bit integer; this is not Taskar's letter\.data",
    ),
    "word_id beyond int64": (
        _gz(_with_field(_letters(GOOD_WORDS), 7, 3, "-99999999999999999999")),
        {},
        r":8: word_id '-99999999999999999999' does not fit a 64-bit integer",
    ),
    "a 1,000-letter word, max_length null": (
        _gz(_letters([(i, i % 10, 1) for i in range(1, 1001)] + [(1001, 0, 1000)])),
        {},
        (
            r":1001: a word of 1000 letters is longer than corpus\.ocr\.length_cap \(64\), the limit while "
            r"max_length is null .*: word_id 1001 starts on this line; raise corpus\.ocr\.length_cap"
        ),
    ),
    "a word longer than max_length": (
        _gz(_letters(GOOD_WORDS + [(99, 1, 20)])),
        {"max_length": 14},
        r":91: a word of 20 letters is longer than corpus\.ocr\.max_length \(14\): word_id 99 starts on this line",
    ),
    "a line over max_line_mb": (
        _gz(_letters(GOOD_WORDS[:3]) + ["1" * 5000] + _letters(GOOD_WORDS[3:], first_id=10)),
        {"max_line_mb": 0.001},
        r":10: a line of over 1000 bytes \(a real one has ~270\); .*corpus\.ocr\.max_line_mb is too small: raise it",
    ),
}


@pytest.mark.parametrize("case", sorted(OCR))
def test_ocr_reader(tmp_path: Path, case: str) -> None:
    data, overrides, pattern = OCR[case]
    path = tmp_path / "letter.data.gz"
    path.write_bytes(data)
    assert len(data) < 1 << 20
    # A previous, good output: the failed read must leave it byte-identical.
    good = tmp_path / "good.data.gz"
    good.write_bytes(_gz(_letters(GOOD_WORDS)))
    docs = tmp_path / "docs"
    write_documents(ocr.read(section("corpus.ocr", url=str(good), cache_dir=str(tmp_path / "cache"))), docs, "ocr")
    before = tree(tmp_path)
    params = section("corpus.ocr", url=str(path), cache_dir=str(tmp_path / "cache"), **overrides)
    with pytest.raises(DataError) as e:
        write_documents(ocr.read(params), docs, "ocr")
    message = str(e.value)
    assert re.match(rf"{re.escape(str(path))}{pattern}", message), message
    assert len(message) < MESSAGE_BYTES
    assert tree(tmp_path) == before


@pytest.mark.slow
def test_ocr_data_stage_names_its_own_key(repo: Path, inputs: Path) -> None:
    path = inputs / "letter.data.gz"
    path.write_bytes(OCR["a 1,000-letter word, max_length null"][0])
    params = stage_params(inputs, {"ocr_data": {"source": {"url": str(path)}}})
    message = failed_stage(repo, inputs, "--params", str(params), module="pipeline.ocr.data")
    assert re.match(rf"error: {re.escape(str(path))}:1001: .* than ocr_data\.source\.length_cap \(64\)", message)


# --- arXiv feeds ----------------------------------------------------------------------------------

FEED = """<?xml version="1.0" encoding="UTF-8"?>{doctype}
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">
  <opensearch:totalResults>{total}</opensearch:totalResults>
  <opensearch:startIndex>{start}</opensearch:startIndex>
{entries}</feed>
"""


def _entry(n: int, summary: str) -> str:
    arxiv_id = f"http://arxiv.org/abs/2101.{n:05d}v1"
    return f"  <entry><id>{arxiv_id}</id><title>T{n}</title><summary>{summary}</summary></entry>\n"


def _feed(entries: str, *, total: str = "2", start: str = "0", doctype: str = "") -> bytes:
    return FEED.format(doctype=doctype, total=total, start=start, entries=entries).encode()


def _arxiv(tmp_path: Path, body: bytes) -> tuple[HTTPTestServer, ArxivParams]:
    srv = HTTPTestServer()
    srv.route("/api/query", body)
    return srv, section(
        "corpus.arxiv", url="", cache_dir=str(tmp_path / "cache"), delay=0, page_size=10, max_results=10
    )


@pytest.mark.parametrize("start", ["x1", "²", "9" * 40])
def test_arxiv_start_index_that_is_not_a_whole_number(tmp_path: Path, start: str) -> None:
    srv, params = _arxiv(tmp_path, _feed(_entry(1, "An abstract."), start=start))
    with srv, pytest.raises(DataError, match=r"/api/query.*: opensearch:startIndex is '.*', not a whole number"):
        list(arxiv.iter_papers(params.model_copy(update={"url": srv.url("/api/query")})))


def test_arxiv_abstracts_emptied_by_a_refused_entity_are_counted_not_misread(tmp_path: Path) -> None:
    doctype = '\n<!DOCTYPE feed [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
    srv, params = _arxiv(tmp_path, _feed(_entry(1, "&lol2;") + _entry(2, "&lol2;"), doctype=doctype))
    with srv, pytest.raises(DataError) as e:
        list(arxiv.read(params.model_copy(update={"url": srv.url("/api/query")})))
    message = str(e.value)
    assert "2 abstracts held an entity reference (&lol2;), which this reader refuses to expand" in message
    assert "declares entities" in message and "corpus.arxiv.url" in message
    assert "widen" not in message and "lol lol" not in message


def test_arxiv_error_feed_message_is_bounded(tmp_path: Path) -> None:
    entry = "<entry><id>http://arxiv.org/api/errors#x</id><summary>" + "bad " * 100_000 + "</summary></entry>\n"
    srv, params = _arxiv(tmp_path, _feed(entry, total="1"))
    with srv, pytest.raises(arxiv.ArxivError) as e:
        list(arxiv.iter_papers(params.model_copy(update={"url": srv.url("/api/query")})))
    assert "arXiv rejected the query: bad bad" in str(e.value) and len(str(e.value)) < 1000


# --- checkpoints ------------------------------------------------------------------------------


class _Payload:
    """Pickles to a call of os.system: what a hostile checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_checkpoint_with_a_pickled_call_is_refused_and_distrusted(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from models.checkpoint import CheckpointError, load

    marker = tmp_path / "ran"
    path = tmp_path / "last.pt"
    torch.save({"format": "rnnlab-lm/1", "model": _Payload(marker)}, path)
    with pytest.raises(CheckpointError) as e:
        load(path)
    message = str(e.value)
    assert message.startswith(f"{path}: holds objects other than tensors and plain types (posix.system)")
    assert "torch.load(weights_only=True) refused; do not trust this file" in message
    assert not marker.exists()  # the payload never ran
    # torch words a refused global two ways; bytes that are no pickle at all are not "refused".
    torch.save({"format": "rnnlab-lm/1", "hook": print}, path)
    with pytest.raises(CheckpointError, match=r"holds objects other than tensors and plain types \(print\)"):
        load(path)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"last\.pt: not an rnnlab checkpoint \(torch\.load"):
        load(path)


# --- messages are bounded wherever a value is shown -----------------------------------------------


def test_a_params_error_for_a_huge_value_is_short_and_names_the_key(tmp_path: Path) -> None:
    from pipeline.params import read_params

    path = tmp_path / "params.yaml"
    write_params(path, {"corpus": {"wikipedia": {"sha256": "z" * 500_000}}})
    with pytest.raises(ParamsError) as e:
        read_params(path)
    message = str(e.value)
    assert "corpus.wikipedia.sha256: must be 64 hex digits (a sha256) or null, got 'zzz" in message
    assert "(str, 500000 chars)" in message and len(message) < 1000


def test_imdb_folder_review_over_the_cap_is_not_read(tmp_path: Path) -> None:
    from pipeline.sources import imdb

    folder = tmp_path / "aclImdb" / "train" / "pos"
    folder.mkdir(parents=True)
    (folder / "0_9.txt").write_bytes(b"fine")
    (folder / "1_9.txt").write_bytes(b"y" * 3000)
    params = section("corpus.imdb", url=str(tmp_path / "aclImdb"), sha256=None, max_review_mb=0.001)
    with pytest.raises(DataError, match=r"1_9\.txt: a review of 3000 bytes, over corpus\.imdb\.max_review_mb"):
        pa.concat_tables(imdb.read(params))
