"""Parquet shard folders: written in bounded memory, read back in order.

A shard folder holds ``part-00000.parquet``, ``part-00001.parquet``, ... each
with at most ``rows_per_shard`` rows, zstd-compressed. Readers take the files
in name order, so row order (and therefore every downstream byte) is
deterministic.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import DataError

COMPRESSION = "zstd"


ROW_GROUP_BYTES = 32 << 20  # buffer small tables into row groups of about this size


class ShardWriter:
    """Append tables to a folder of Parquet shards, rotating every ``rows_per_shard`` rows.

    Small tables are buffered into row groups of about ``ROW_GROUP_BYTES``:
    one row group per small batch would cost a quarter of the write time.
    Write into an ``atomic_dir`` so that the folder appears only when complete.
    """

    def __init__(self, folder: Path, schema: pa.Schema, rows_per_shard: int, prefix: str = "part"):
        if rows_per_shard < 1:
            raise ValueError(f"rows_per_shard must be ≥ 1, got {rows_per_shard}")
        self.folder = Path(folder)
        self.schema = schema
        self.rows_per_shard = rows_per_shard
        self.prefix = prefix
        self.shards = 0
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._rows_in_shard = 0
        self._pending: list[pa.Table] = []
        self._pending_bytes = 0

    def _open(self) -> pq.ParquetWriter:
        path = self.folder / f"{self.prefix}-{self.shards:05d}.parquet"
        self.shards += 1
        self._rows_in_shard = 0
        return pq.ParquetWriter(path, self.schema, compression=COMPRESSION)

    def write(self, table: pa.Table | pa.RecordBatch) -> None:
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        table = table.select(self.schema.names).cast(self.schema)
        self.rows += table.num_rows
        self._pending.append(table)
        self._pending_bytes += table.nbytes
        if self._pending_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        self._pending, self._pending_bytes = [], 0
        start = 0
        while start < table.num_rows:
            if self._writer is None or self._rows_in_shard >= self.rows_per_shard:
                if self._writer is not None:
                    self._writer.close()
                self._writer = self._open()
            take = min(self.rows_per_shard - self._rows_in_shard, table.num_rows - start)
            self._writer.write_table(table.slice(start, take))
            self._rows_in_shard += take
            start += take

    def close(self) -> None:
        self._flush()
        if self._writer is None:  # no rows at all: still leave one (empty) shard with the schema
            self._writer = self._open()
        self._writer.close()
        self._writer = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()
        elif self._writer is not None:
            self._pending.clear()
            self._writer.close()


def shard_files(folder: Path, kind: str) -> list[Path]:
    """The shards of ``folder`` in read order; a clear error, naming the ``kind`` of folder, if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: {kind} not found; run the stage that writes it (dvc repro)")
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise DataError(f"{folder}: no .parquet shards in this {kind}; rerun the stage that writes it")
    return files


def check_schema(path: Path, schema: pa.Schema, required: dict[str, Sequence[pa.DataType]], kind: str) -> None:
    """Fail, naming the file and column, unless ``schema`` has every required column and type."""
    problems = []
    for name, types in required.items():
        if name not in schema.names:
            problems.append(f"missing column {name!r}")
        elif schema.field(name).type not in types:
            want = " or ".join(str(t) for t in types)
            problems.append(f"column {name!r} has type {schema.field(name).type}, expected {want}")
    if problems:
        need = ", ".join(f"{n}: {ts[0]}" for n, ts in required.items())
        raise DataError(f"{path}: not a valid {kind}: {'; '.join(problems)}. A {kind} needs the columns {need}.")


def iter_batches(
    folder: Path,
    columns: Sequence[str],
    *,
    required: dict[str, Sequence[pa.DataType]],
    kind: str,
    batch_rows: int = 2048,
) -> Iterator[pa.RecordBatch]:
    """Stream ``columns`` from every shard in order, checking each shard's schema first."""
    for path in shard_files(folder, kind):
        pf = pq.ParquetFile(path)
        check_schema(path, pf.schema_arrow, required, kind)
        present = [c for c in columns if c in pf.schema_arrow.names]
        yield from pf.iter_batches(batch_size=batch_rows, columns=present)


def schema_of(folder: Path, kind: str) -> pa.Schema:
    """The Arrow schema of the first shard."""
    return pq.read_schema(shard_files(folder, kind)[0])
