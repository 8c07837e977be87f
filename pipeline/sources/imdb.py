"""IMDB movie reviews (Maas et al. 2011; seed 001): sentiment-labelled documents.

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
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa

from pipeline.download import fetch, is_remote, local_path
from pipeline.errors import DataError
from pipeline.params import ImdbParams
from pipeline.sources.text import holdout_draw

BATCH = 5000
# The last three path components of a review: split/label/<id>_<rating>.txt
REVIEW = re.compile(r"(?:^|/)(train|test)/(pos|neg|unsup)/(\d+)_(\d+)\.txt$")
_BR = re.compile(r"\s*(?:<br\s*/?>\s*)+", re.I)
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


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: invalid UTF-8 at byte {e.start}; the archive is damaged") from None


def check_member(member: tarfile.TarInfo, archive: str) -> None:
    """Refuse a tar member that could write or point outside the archive, naming it."""
    name = member.name

    def refuse(why: str) -> DataError:
        return DataError(f"{archive}: refusing member {name!r}: {why}; this is not the aclImdb archive")

    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise refuse("absolute path")
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        raise refuse("'..' in its path")
    if member.issym() or member.islnk():
        target = member.linkname
        if target.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", target):
            raise refuse(f"link to the absolute path {target!r}")
        # A symlink's target is relative to its own folder; a hard link's to the archive root.
        base = PurePosixPath(name).parent if member.issym() else PurePosixPath()
        depth = 0
        for part in (base / target).parts:
            depth += -1 if part == ".." else (0 if part == "." else 1)
            if depth < 0:
                raise refuse(f"link to {target!r}, outside the archive")
    elif not (member.isfile() or member.isdir()):
        raise refuse("a device, FIFO or other special file")


def _review(relpath: str, data: bytes, where: str) -> Review | None:
    m = REVIEW.search(relpath)
    if m is None:
        return None
    split, label, rid, rating = m.group(1), m.group(2), int(m.group(3)), int(m.group(4))
    if not (label == "unsup" and rating == 0) and not (1 <= rating <= 10):
        raise DataError(f"{where}: rating {rating} in the file name is outside 1-10")
    return Review(split, label, rid, rating, f"{split}/{label}/{rid}_{rating}.txt", clean(_decode(data, where)))


def iter_archive(path: Path) -> Iterator[Review]:
    """Reviews from a ``.tar.gz`` (or ``.tar``), streaming: members are read in archive order."""
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                check_member(member, str(path))
                if not member.isfile() or REVIEW.search(member.name) is None:
                    continue
                f = tar.extractfile(member)
                assert f is not None  # a regular file
                review = _review(member.name, f.read(), f"{path}:{member.name}")
                if review is not None:
                    yield review
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(
            f"{path}: not a readable tar archive ({e}); if it was downloaded, delete it from the cache and rerun"
        ) from None


def _root(folder: Path) -> Path:
    """The folder that holds train/ and test/: ``folder`` itself or its ``aclImdb/``."""
    for candidate in (folder, folder / "aclImdb"):
        if (candidate / "train").is_dir() or (candidate / "test").is_dir():
            return candidate
    raise DataError(f"{folder}: no train/ or test/ folder here or in {folder / 'aclImdb'}; point url at aclImdb/")


def iter_folder(folder: Path) -> Iterator[Review]:
    """Reviews from an extracted folder, sorted by split, label and id."""
    root = _root(folder)
    found = []
    for (split, label), _ in sorted(_ORDER.items(), key=lambda kv: kv[1]):
        sub = root / split / label
        if not sub.is_dir():
            continue
        for file in sub.iterdir():
            m = REVIEW.search(f"{split}/{label}/{file.name}")
            if m is not None and file.is_file():
                found.append((_ORDER[(split, label)], int(m.group(3)), file))
    for _, _, file in sorted(found):
        rel = file.relative_to(root).as_posix()
        review = _review(rel, file.read_bytes(), str(file))
        if review is not None:
            yield review


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


def reviews(params: ImdbParams) -> Iterator[Review]:
    """The reviews named by ``params.url``: an archive (downloaded if remote) or a folder."""
    if not is_remote(params.url) and local_path(params.url).is_dir():
        source = iter_folder(local_path(params.url))
    else:
        archive = fetch(params.url, params.cache_dir, sha256=params.sha256, size=params.size,
                        retries=params.retries, timeout=params.timeout)  # fmt: skip
        source = iter_archive(archive)
    for review in source:
        if review.label != "unsup" or params.unsup:
            yield review


def read(params: ImdbParams) -> Iterator[pa.Table]:
    """The reviews as document-table batches."""
    batch: list[Review] = []
    for review in reviews(params):
        batch.append(review)
        if len(batch) == BATCH:
            yield _table(batch, params)
            batch = []
    if batch:
        yield _table(batch, params)
