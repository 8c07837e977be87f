"""The document table: the contract between every corpus source and tokenize.

Schema (Parquet shards under ``data/corpus/docs/``):

========== ======== ===================================================
column     type     meaning
========== ======== ===================================================
doc_id     int64    0, 1, 2, ... in table order (assigned by the corpus stage)
split      string   ``train``, ``valid`` or ``test`` (``unsup`` for unlabelled extras)
text       string   the document, UTF-8, as the source delivered it
label      string   optional: a class label (IMDB: ``pos``/``neg``)
...        any      optional metadata kept from the source (``source_id``, ``title``,
                    ``rating``, ``oracle_logprob``, ...), ignored downstream
========== ======== ===================================================

Sources yield tables with ``split``, ``text`` and any optional columns; the
corpus stage numbers the rows and writes the shards.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa

from pipeline import shards

DOC_TABLE = "document table"  # how messages name a folder of these shards
REQUIRED: dict[str, Sequence[pa.DataType]] = {
    "doc_id": (pa.int64(),),
    "split": (pa.string(), pa.large_string(), pa.dictionary(pa.int32(), pa.string())),
    "text": (pa.string(), pa.large_string()),
}
BASE_FIELDS = [pa.field("doc_id", pa.int64()), pa.field("split", pa.string()), pa.field("text", pa.string())]


def schema_for(table: pa.Table) -> pa.Schema:
    """The document-table schema for a source's table: base columns, then its extras in order."""
    extras = [f for f in table.schema if f.name not in ("doc_id", "split", "text")]
    return pa.schema(BASE_FIELDS + extras)


def iter_docs(
    folder: Path, columns: Sequence[str] = ("doc_id", "split", "text"), batch_rows: int = 2048
) -> Iterator[pa.RecordBatch]:
    """Stream the document table in order, validating each shard's schema."""
    return shards.iter_batches(folder, columns, required=REQUIRED, kind=DOC_TABLE, batch_rows=batch_rows)


def columns_of(folder: Path) -> list[str]:
    """Column names of the document table (from its first shard, after checking its schema)."""
    first = shards.shard_files(folder, DOC_TABLE)[0]
    schema = shards.schema_of(folder, DOC_TABLE)
    shards.check_schema(first, schema, REQUIRED, DOC_TABLE)
    return schema.names
