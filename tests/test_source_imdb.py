"""The IMDB source on the real sample in ../shared/data/aclImdb-sample/, as a folder and as a tar.gz."""

from __future__ import annotations

import collections
import hashlib
import io
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from bench.harness import section
from pipeline.errors import DataError
from pipeline.sources import imdb
from tests.httpserver import HTTPTestServer

# Counted once from the file names with the shell (independently of pipeline/):
#   ls train/pos | sed 's/.*_\([0-9]*\)\.txt/\1/' | sort -n | uniq -c
RATINGS = {
    ("train", "pos"): {7: 48, 8: 46, 9: 49, 10: 107},
    ("train", "neg"): {1: 90, 2: 44, 3: 51, 4: 65},
    ("test", "pos"): {7: 35, 8: 50, 9: 63, 10: 102},
    ("test", "neg"): {1: 65, 2: 44, 3: 70, 4: 71},
}


@pytest.fixture(scope="module")
def sample(shared_data: Path) -> Path:
    return shared_data / "aclImdb-sample"


@pytest.fixture(scope="module")
def archive(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample packed the way the real aclImdb_v1.tar.gz is: one top-level aclImdb/ folder."""
    path = tmp_path_factory.mktemp("imdb") / "aclImdb_v1.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        tar.add(sample / "aclImdb", arcname="aclImdb")
    return path


def _read(url: str | Path, tmp_path: Path, **kw) -> pa.Table:
    kw.setdefault("sha256", None)
    params = section("corpus.imdb", url=str(url), cache_dir=str(tmp_path / "cache"), **kw)
    return pa.concat_tables(imdb.read(params))


def _by_source(table: pa.Table) -> dict[str, dict]:
    return {row["source_id"]: row for row in table.to_pylist()}


def test_folder_labels_ratings_and_splits(sample, tmp_path):
    table = _read(sample, tmp_path, holdout=0.1, seed=0)
    assert table.column_names == ["split", "text", "label", "rating", "source_id"]
    assert table.schema.field("rating").type == pa.int8()
    rows = table.to_pylist()
    assert len(rows) == 1000  # unsup left out by default
    ratings: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
    for r in rows:
        ratings[(r["source_id"].split("/")[0], r["label"])][r["rating"]] += 1
    assert {k: dict(v) for k, v in ratings.items()} == RATINGS
    splits = collections.Counter((r["split"], r["label"]) for r in rows)
    assert splits[("test", "pos")] == splits[("test", "neg")] == 250
    for label in ("pos", "neg"):
        assert splits[("train", label)] + splits[("valid", label)] == 250
        assert 10 <= splits[("valid", label)] <= 45  # ~10% of 250
    assert all(r["split"] != "valid" or r["source_id"].startswith("train/") for r in rows)
    assert not any("<br" in r["text"].lower() for r in rows)
    first = rows[0]
    assert first["source_id"] == "train/pos/0_9.txt" and first["rating"] == 9
    assert first["text"].startswith("Bromwell High is a cartoon comedy. It ran at the same time")


def test_br_tags_become_single_spaces(sample):
    raw = next(p for p in sorted((sample / "aclImdb/train/pos").iterdir()) if b"<br" in p.read_bytes())
    text = imdb.clean(raw.read_text(encoding="utf-8"))
    assert "<br" not in text and "  " not in text
    assert imdb.clean("a.<br /><br />b <BR>c<br/>") == "a. b c"


def test_unsup_is_optional(sample, tmp_path):
    table = _read(sample / "aclImdb", tmp_path, unsup=True)
    unsup = table.filter(pc.equal(table["split"], "unsup")).to_pylist()
    assert len(unsup) == 250
    assert all(r["label"] is None and r["rating"] == 0 for r in unsup)


def test_archive_over_http_matches_the_folder(sample, archive, tmp_path):
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    with HTTPTestServer(root=archive.parent) as srv:
        from_tar = _read(srv.url(archive.name), tmp_path, sha256=sha, unsup=True)
        assert srv.count(f"/{archive.name}") == 1
    from_folder = _read(sample, tmp_path, unsup=True)
    assert from_tar.num_rows == from_folder.num_rows == 1250
    assert _by_source(from_tar) == _by_source(from_folder)  # same rows, same splits; only the order differs


def test_archive_sha256_is_checked(archive, tmp_path):
    with pytest.raises(DataError, match="sha256 mismatch"):
        _read(archive, tmp_path, sha256="0" * 64)


def _evil_tar(tmp_path: Path, member: tarfile.TarInfo, data: bytes = b"x") -> Path:
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("aclImdb/train/pos/0_9.txt")
        ok.size = 4
        tar.addfile(ok, io.BytesIO(b"good"))
        if member.isfile():
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        else:
            tar.addfile(member)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


@pytest.mark.parametrize(
    "member,why",
    [
        (_member("/etc/cron.d/evil"), "absolute path"),
        (_member("aclImdb/../../evil.txt"), "'..' in its path"),
        (_member("aclImdb/train/pos/1_8.txt", tarfile.SYMTYPE, "../../../../etc/passwd"), "outside the archive"),
        (_member("aclImdb/train/pos/2_8.txt", tarfile.SYMTYPE, "/etc/passwd"), "absolute path"),
        (_member("aclImdb/train/pos/3_8.txt", tarfile.LNKTYPE, "../outside.txt"), "outside the archive"),
        (_member("aclImdb/fifo", tarfile.FIFOTYPE), "special file"),
    ],
    ids=["absolute", "dotdot", "symlink-escape", "symlink-absolute", "hardlink-escape", "fifo"],
)
def test_malicious_tar_is_refused_naming_the_member(tmp_path, member, why):
    path = _evil_tar(tmp_path, member)
    with pytest.raises(DataError, match="refusing member") as e:
        _read(path, tmp_path)
    assert repr(member.name) in str(e.value) and why in str(e.value)


def test_links_inside_the_archive_are_allowed_and_ignored(tmp_path):
    path = _evil_tar(tmp_path, _member("aclImdb/train/pos/link", tarfile.SYMTYPE, "0_9.txt"))
    table = _read(path, tmp_path, holdout=0.0)
    assert table["text"].to_pylist() == ["good"]


def test_damaged_archive_is_a_clear_error(archive, tmp_path):
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cut\.tar\.gz: not a readable tar archive"):
        _read(cut, tmp_path)


def test_folder_without_reviews_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no train/ or test/ folder"):
        _read(tmp_path / "empty", tmp_path)
