"""IMDB movie reviews (Maas et al. 2011): sentiment-labelled documents.

    corpus:
      source: imdb
      imdb:
        url: https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz

Input: the ``aclImdb_v1.tar.gz`` archive, read by streaming through it (never
extracted to disk), or an extracted ``aclImdb/`` folder (``url`` is then the
folder or its parent). Reviews are ``{train,test}/{pos,neg,unsup}/<id>_<rating>.txt``;
everything else in the archive (vocabulary, bag-of-words features, URL lists) is ignored.

Untrusted archive: every member is checked, even those not read. An absolute
path, a ``..`` component, a link whose target leaves the archive, or a device
or FIFO fails with the member's name: such an archive is not the dataset.
(Nothing is extracted; were it ever, ``tarfile``'s ``filter="data"`` is the way.)
A review larger than ``max_review_mb`` (from its tar header or file size, before it
is read), an id of over 18 digits, a damaged gzip stream or a truncated archive
fails the same way, naming the member; memory holds one review at a time.

Document table:

============ ======= ===================================================
column       type    meaning
============ ======= ===================================================
split        string  train, valid (``holdout`` of train), test; unsup if ``unsup: true``
text         string  the review, ``<br />`` runs replaced by one space
label        string  ``pos`` or ``neg``; null for unsup
rating       int8    the star rating from the file name (1-4 neg, 7-10 pos, 0 unsup)
source_id    string  the review's path, e.g. ``train/pos/0_9.txt``
============ ======= ===================================================

IMDB has no validation split: ``holdout`` of the train reviews move to valid,
chosen by a hash of (seed, id, label), so the folder and the archive give the
same split whatever their order. Rows come in archive order (a tar's order is
fixed), or sorted by split, label and id for a folder.

Classifying these reviews by sentiment with a recurrent network follows Abrahams,
Hafner, Erwitt & Scarpinelli, *TensorFlow for Machine Intelligence* (Bleeding
Edge Press, 2016), chapter 6.
"""

from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import os
import re
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np
import pyarrow as pa

from pipeline.download import damaged_fix, fetch_source, is_remote, local_path
from pipeline.errors import DataError, shown
from pipeline.params import ImdbParams
from pipeline.progress import Progress
from pipeline.sources.text import holdout_draw

logger = logging.getLogger(f"rnnlab.{__name__}")

BATCH = 5000
# The last three path components of a review: split/label/<id>_<rating>.txt
REVIEW = re.compile(r"(?:^|/)(train|test)/(pos|neg|unsup)/(\d+)_(\d+)\.txt$")
# (?<!\s): a match starts where a whitespace run starts, never inside one (the greedy \s*
# before it would have taken that run anyway), and the possessive *+ never gives back
# whitespace that "<br" cannot match. Without them, a review of 40 KB of spaces took 40 s.
_BR = re.compile(r"(?<!\s)\s*+(?:<br\s*+/?>\s*+)+", re.IGNORECASE)
MAX_ID_DIGITS = 18  # ids go into int64 as 2 * id + label; 18 digits keep that below 2**63
_ORDER = {("train", "pos"): 0, ("train", "neg"): 1, ("test", "pos"): 2, ("test", "neg"): 3, ("train", "unsup"): 4}


@dataclass(frozen=True)
class Review:
    split: str  # train, test (as in the dataset; valid is carved later)
    label: str  # pos, neg, unsup
    id: int
    rating: int
    path: str  # split/label/<id>_<rating>.txt
    text: str


def clean(text: str) -> str:
    """Replace each run of ``<br />`` tags (and the spaces around it) with one space."""
    return _BR.sub(" ", text).strip()


@dataclass(frozen=True)
class _Limits:
    """What reading one source needs beyond its params: the review size cap, and words for errors."""

    max_bytes: int
    key: str  # where the params sit in params.yaml: corpus.imdb or imdb_data.source
    fix: str  # what to do about a damaged input (download.damaged_fix)

    def too_large(self, where: str, size: int) -> DataError:
        return DataError(
            f"{where}: a review of {size} bytes, over {self.key}.max_review_mb ({self.max_bytes / 1e6:g} MB; a "
            f"real review is under 15 KB); raise it if the reviews really are that long, or {self.fix}"
        )


def _decode(data: bytes, where: str, fix: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: invalid UTF-8 at byte {e.start}; the archive is damaged: {fix}") from None


def check_member(member: tarfile.TarInfo, archive: str) -> None:
    """Refuse a tar member that could write or point outside the archive, naming it."""
    name = member.name

    def refuse(why: str) -> DataError:
        return DataError(f"{archive}: refusing member {shown(name)}: {why}; this is not the aclImdb archive")

    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise refuse("absolute path")
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        raise refuse("'..' in its path")
    if member.issym() or member.islnk():
        target = member.linkname
        if target.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", target):
            raise refuse(f"link to the absolute path {shown(target)}")
        # A symlink's target is relative to its own folder; a hard link's to the archive root.
        base = PurePosixPath(name).parent if member.issym() else PurePosixPath()
        depth = 0
        for part in (base / target).parts:
            depth += -1 if part == ".." else (0 if part == "." else 1)
            if depth < 0:
                raise refuse(f"link to {shown(target)}, outside the archive")
    elif not (member.isfile() or member.isdir()):
        raise refuse("a device, FIFO or other special file")


def _name(m: re.Match[str], where: str, fix: str) -> tuple[str, str, int, int]:
    """split, label, id and rating from a review's name, checked before any int() of a long digit run."""
    split, label, rid, rating = m.group(1), m.group(2), m.group(3), m.group(4)
    # \d also matches non-ASCII digits, which int() reads: only the length needs a bound.
    if len(rid) > MAX_ID_DIGITS:
        raise DataError(
            f"{where}: review id {shown(rid, 40)} in the file name has over {MAX_ID_DIGITS} digits (it must fit "
            f"int64); this is not the aclImdb dataset: {fix}"
        )
    value = int(rating) if len(rating) <= 2 else -1
    if not (label == "unsup" and value == 0) and not (1 <= value <= 10):
        raise DataError(f"{where}: rating {shown(rating, 40)} in the file name is outside 1-10: {fix}")
    return split, label, int(rid), value


def _review(m: re.Match[str], data: bytes, where: str, fix: str) -> Review:
    split, label, rid, rating = _name(m, where, fix)
    return Review(split, label, rid, rating, f"{split}/{label}/{rid}_{rating}.txt", clean(_decode(data, where, fix)))


def _uncompressed(source: IO[bytes]) -> IO[bytes]:
    """The tar bytes of an archive opened as ``source``: gzip, bz2, xz or none, sniffed from its first bytes.

    Decompressed here rather than by tarfile's stream mode, which never checks the gzip
    trailer: a wrong CRC or length went unnoticed.
    """
    magic = source.read(6)
    source.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.open(source, "rb")
    if magic.startswith(b"BZh"):
        return bz2.open(source, "rb")
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.open(source, "rb")
    return source


POSITION_EVERY = 256  # archive members between reads of the archive's position, for the progress


def iter_archive(path: Path, limits: _Limits | None = None, progress: Progress | None = None) -> Iterator[Review]:
    """Reviews from a ``.tar.gz`` (or ``.tar``), streaming: members are read in archive order.

    ``progress`` (in bytes of the archive file) is set to how far it was read.
    """
    limits = limits or _Limits(64_000_000, "corpus.imdb", "replace it with an intact copy of aclImdb_v1.tar.gz")
    member: tarfile.TarInfo | None = None
    try:
        with (
            open(path, "rb") as source,
            _uncompressed(source) as raw,
            tarfile.open(fileobj=raw, mode="r|") as tar,
        ):
            for n, member in enumerate(tar):
                if progress is not None and n % POSITION_EVERY == 0:
                    progress.set(os.lseek(source.fileno(), 0, os.SEEK_CUR))
                check_member(member, str(path))
                m = REVIEW.search(member.name) if member.isfile() else None
                if m is None:
                    continue
                where = f"{path}: member {shown(member.name)}"
                _name(m, where, limits.fix)  # a bad name fails before its data is read
                if member.size > limits.max_bytes:  # the header's size: refused before a byte is read
                    raise limits.too_large(where, member.size)
                f = tar.extractfile(member)
                assert f is not None  # a regular file
                yield _review(m, f.read(), where, limits.fix)
            # tarfile stops at the end-of-archive blocks: read on to the end of the compressed
            # stream, so that its checksum (gzip's CRC and length, bz2's, xz's) is verified.
            while raw.read(1 << 20):
                pass
            if progress is not None:
                progress.set(os.lseek(source.fileno(), 0, os.SEEK_CUR))
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as e:
        after = f" after member {shown(member.name)}" if member is not None else ""
        raise DataError(
            f"{path}: not a readable tar archive ({shown(str(e) or type(e).__name__, 160)}{after}); the file is "
            f"damaged or truncated: {limits.fix}"
        ) from None


def _root(folder: Path) -> Path:
    """The folder that holds train/ and test/: ``folder`` itself or its ``aclImdb/``."""
    for candidate in (folder, folder / "aclImdb"):
        if (candidate / "train").is_dir() or (candidate / "test").is_dir():
            return candidate
    raise DataError(f"{folder}: no train/ or test/ folder here or in {folder / 'aclImdb'}; point url at aclImdb/")


def iter_folder(folder: Path, limits: _Limits | None = None, progress: Progress | None = None) -> Iterator[Review]:
    """Reviews from an extracted folder, sorted by split, label and id; ``progress`` counts the files."""
    limits = limits or _Limits(64_000_000, "corpus.imdb", "replace it with an intact copy of aclImdb")
    root = _root(folder)
    found = []
    for (split, label), _ in sorted(_ORDER.items(), key=lambda kv: kv[1]):
        sub = root / split / label
        if not sub.is_dir():
            continue
        for file in sub.iterdir():
            m = REVIEW.search(f"{split}/{label}/{file.name}")
            if m is not None and file.is_file():
                found.append((_ORDER[(split, label)], _name(m, str(file), limits.fix)[2], file, m))
    if progress is not None:
        progress.set_total(len(found))
    for _, _, file, m in sorted(found, key=lambda t: t[:3]):
        if progress is not None:
            progress.update()
        with open(file, "rb") as f:
            data = f.read(limits.max_bytes + 1)  # bounded even if the file grew since it was listed
        if len(data) > limits.max_bytes:
            raise limits.too_large(str(file), file.stat().st_size)
        yield _review(m, data, str(file), limits.fix)


def _table(reviews: list[Review], params: ImdbParams) -> pa.Table:
    # Held-out draw per train review: a hash of (seed, 2*id + is_pos), independent of order.
    index = np.array([2 * r.id + (r.label == "pos") for r in reviews], dtype=np.int64)
    u = holdout_draw(params.seed, index)
    split = np.array([r.split if r.label != "unsup" else "unsup" for r in reviews], dtype=object)
    split[(split == "train") & (u < params.holdout)] = "valid"
    return pa.table(
        {
            "split": pa.array(split, pa.string()),
            "text": pa.array([r.text for r in reviews], pa.string()),
            "label": pa.array([r.label if r.label != "unsup" else None for r in reviews], pa.string()),
            "rating": pa.array([r.rating for r in reviews], pa.int8()),
            "source_id": pa.array([r.path for r in reviews], pa.string()),
        }
    )


def reviews(params: ImdbParams, key: str = "corpus.imdb") -> Iterator[Review]:
    """The reviews named by ``params.url``: an archive (downloaded if remote) or a folder.

    ``key``: where ``params`` sit in params.yaml (``corpus.imdb`` or ``imdb_data.source``), for messages.
    """
    max_bytes = int(params.max_review_mb * 1e6)
    desc = f"{key.replace('.', ' ', 1)}"  # "corpus imdb"
    if not is_remote(params.url) and local_path(params.url).is_dir():
        folder = local_path(params.url)
        limits = _Limits(max_bytes, key, damaged_fix(params.url, folder, f"{key}.url"))
        progress = Progress(desc, None, unit="files", logger=logger)
        source = iter_folder(folder, limits, progress)
    else:
        archive = fetch_source(params)
        limits = _Limits(max_bytes, key, damaged_fix(params.url, archive, f"{key}.url"))
        progress = Progress(desc, archive.stat().st_size, unit="B", logger=logger)
        source = iter_archive(archive, limits, progress)
    with progress:
        for review in source:
            if review.label != "unsup" or params.unsup:
                yield review


def read(params: ImdbParams, key: str = "corpus.imdb") -> Iterator[pa.Table]:
    """The reviews as document-table batches (``key``: see ``reviews``)."""
    batch: list[Review] = []
    for review in reviews(params, key):
        batch.append(review)
        if len(batch) == BATCH:
            yield _table(batch, params)
            batch = []
    if batch:
        yield _table(batch, params)
