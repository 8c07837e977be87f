"""pipeline.download against a real threaded HTTP server on 127.0.0.1, with injected faults."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from pipeline.download import cache_name, fetch, request
from pipeline.errors import DataError
from tests.httpserver import HTTPTestServer

SIZE = 300_000


@pytest.fixture
def payload(tmp_path: Path) -> tuple[Path, bytes, str]:
    root = tmp_path / "www"
    root.mkdir()
    data = random.Random(7).randbytes(SIZE)
    (root / "blob.bin").write_bytes(data)
    return root, data, hashlib.sha256(data).hexdigest()


@pytest.fixture
def server(payload: tuple[Path, bytes, str]):
    with HTTPTestServer(root=payload[0]) as srv:
        yield srv


def _fetch(srv: HTTPTestServer, cache: Path, **kw):
    kw.setdefault("backoff", 0)
    kw.setdefault("timeout", 10)
    return fetch(srv.url("blob.bin"), cache, **kw)


def test_download_verifies_and_then_skips(server, payload, tmp_path):
    _, data, sha = payload
    cache = tmp_path / "cache"
    path = _fetch(server, cache, sha256=sha, size=SIZE)
    assert path == cache / "blob.bin"
    assert path.read_bytes() == data
    assert not (cache / "blob.bin.part").exists()
    assert server.count("/blob.bin") == 1
    # A verified file in the cache is not downloaded again.
    assert _fetch(server, cache, sha256=sha, size=SIZE) == path
    assert server.count("/blob.bin") == 1


def test_dropped_connection_then_next_call_resumes(server, payload, tmp_path):
    _, data, sha = payload
    cache = tmp_path / "cache"
    server.drop_after = 100_000
    with pytest.raises(DataError, match=r"rerun to resume"):
        _fetch(server, cache, sha256=sha, retries=0)
    part = cache / "blob.bin.part"
    kept = part.stat().st_size
    assert 0 < kept <= 100_000
    assert not (cache / "blob.bin").exists()

    path = _fetch(server, cache, sha256=sha)
    assert server.requests[-1].headers.get("Range") == f"bytes={kept}-"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    assert path.read_bytes() == data
    assert not part.exists()


def test_dropped_connection_is_resumed_within_one_call(server, payload, tmp_path):
    _, data, sha = payload
    server.drop_after = 50_000
    server.drop_times = 3  # three cuts in a row: each attempt makes progress, so retries=1 suffices
    path = _fetch(server, tmp_path / "cache", sha256=sha, retries=1)
    assert path.read_bytes() == data
    ranges = [r.headers.get("Range") for r in server.requests]
    assert ranges[0] is None and all(r is not None for r in ranges[1:])
    assert len(ranges) == 4


def test_server_ignoring_range_restarts_cleanly(server, payload, tmp_path):
    _, data, sha = payload
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "blob.bin.part").write_bytes(data[:1234])
    server.ignore_range = True
    path = _fetch(server, cache, sha256=sha)
    assert server.requests[-1].headers.get("Range") == "bytes=1234-"  # asked to resume, got 200
    assert path.read_bytes() == data


def test_partial_longer_than_file_restarts(server, payload, tmp_path):
    _, data, sha = payload
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "blob.bin.part").write_bytes(b"x" * (SIZE + 10))  # 416 from the server
    assert _fetch(server, cache, sha256=sha).read_bytes() == data


def test_500_twice_then_200(server, payload, tmp_path):
    _, data, sha = payload
    server.fail_times = 2
    slept: list[float] = []
    path = _fetch(server, tmp_path / "cache", sha256=sha, backoff=0.5, sleep=slept.append)
    assert path.read_bytes() == data
    assert server.count("/blob.bin") == 3
    assert slept == [0.5, 1.0]  # exponential backoff


def test_500_beyond_retries_fails(server, payload, tmp_path):
    server.fail_times = 3
    with pytest.raises(DataError, match=r"failed after 2 retries .*HTTP 500"):
        _fetch(server, tmp_path / "cache", retries=2)


def test_404_fails_at_once_naming_the_url(server, tmp_path):
    url = server.url("missing.bin")
    with pytest.raises(DataError, match="HTTP 404") as e:
        fetch(url, tmp_path / "cache", backoff=0)
    assert url in str(e.value)
    assert len(server.requests) == 1  # no retries
    assert not (tmp_path / "cache" / "missing.bin").exists()
    assert not (tmp_path / "cache" / "missing.bin.part").exists()


def test_403_fails_at_once(server, tmp_path):
    server.status_override = 403
    with pytest.raises(DataError, match="HTTP 403"):
        _fetch(server, tmp_path / "cache")
    assert len(server.requests) == 1


def test_wrong_bytes_leave_no_file_and_show_both_hashes(server, payload, tmp_path):
    _, data, sha = payload
    server.corrupt = True
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as e:
        _fetch(server, cache, sha256=sha)
    got = hashlib.sha256(bytes(b ^ 0xFF for b in data[:64]) + data[64:]).hexdigest()
    assert sha in str(e.value) and got in str(e.value)
    assert not (cache / "blob.bin").exists()
    assert not (cache / "blob.bin.part").exists()


def test_wrong_size_is_an_error(server, tmp_path):
    with pytest.raises(DataError, match=f"expected {SIZE + 1} bytes, got {SIZE}"):
        _fetch(server, tmp_path / "cache", size=SIZE + 1)
    assert not (tmp_path / "cache" / "blob.bin").exists()


def test_verified_note_spares_rehashing_until_the_file_changes(server, payload, tmp_path, monkeypatch):
    _, data, sha = payload
    cache = tmp_path / "cache"
    path = _fetch(server, cache, sha256=sha)
    assert (cache / "blob.bin.verified").is_file()
    import pipeline.download as dl

    hashed: list[Path] = []
    real = dl.sha256_file
    monkeypatch.setattr(dl, "sha256_file", lambda p: hashed.append(Path(p)) or real(p))
    assert _fetch(server, cache, sha256=sha) == path
    assert hashed == []  # the note vouches for the unchanged file
    path.write_bytes(data[:-1] + b"\0")  # same size, new mtime and content
    assert _fetch(server, cache, sha256=sha).read_bytes() == data
    assert hashed and server.count("/blob.bin") == 2


def test_damaged_cached_file_is_fetched_again(server, payload, tmp_path):
    _, data, sha = payload
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "blob.bin").write_bytes(b"stale")
    assert _fetch(server, cache, sha256=sha).read_bytes() == data
    assert server.count("/blob.bin") == 1


def test_local_paths_and_file_urls_are_used_in_place(payload, tmp_path):
    root, _, sha = payload
    src = root / "blob.bin"
    assert fetch(str(src), tmp_path / "cache", sha256=sha) == src
    assert fetch(src.as_uri(), tmp_path / "cache", sha256=sha, size=SIZE) == src
    assert not (tmp_path / "cache").exists()  # nothing copied
    with pytest.raises(DataError, match="sha256 mismatch"):
        fetch(str(src), tmp_path / "cache", sha256="0" * 64)
    assert src.exists()  # a user's own file is never deleted
    with pytest.raises(DataError, match="no such file"):
        fetch(str(root / "nope.bin"), tmp_path / "cache")


def test_bad_sha_param_and_names(tmp_path):
    with pytest.raises(DataError, match="64 hex digits"):
        fetch("http://127.0.0.1:9/x", tmp_path, sha256="abc")
    assert cache_name("https://example.org/a/b/file%20name.xml.bz2?x=1") == "file name.xml.bz2"
    assert cache_name("https://example.org/").startswith("download-")


def test_progress_bar_does_not_break_the_download(server, payload, tmp_path, capsys):
    _, data, sha = payload
    assert _fetch(server, tmp_path / "cache", sha256=sha, progress=True).read_bytes() == data


def test_request_retries_5xx_and_returns_4xx(tmp_path):
    with HTTPTestServer() as srv:
        srv.route("/api", "ok")
        srv.route("/bad", "<feed/>", status=400)
        srv.fail_times = 2
        r = request(srv.url("api"), backoff=0)
        assert r.status_code == 200 and r.text == "ok" and srv.count("/api") == 3
        assert request(srv.url("bad"), backoff=0).status_code == 400
        srv.fail_times = 5
        with pytest.raises(DataError, match="failed after 1 retries"):
            request(srv.url("api"), retries=1, backoff=0)
