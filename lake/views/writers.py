"""Writers of view output: Parquet, CSV and NDJSON, streamed batch by batch.

CSV cannot hold lists: a ``collection`` column is written as its JSON array text.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from lake.views.errors import ViewDefinitionError

FORMATS = ("parquet", "csv", "ndjson")


def write_batches(batches: Iterable[pa.RecordBatch], schema: pa.Schema, fmt: str, path: Path) -> int:
    """Write ``batches`` to ``path`` in ``fmt``; the number of rows written.

    Raises ViewDefinitionError for an unknown format.
    """
    if fmt == "parquet":
        return _parquet(batches, schema, path)
    if fmt == "csv":
        return _csv(batches, schema, path)
    if fmt == "ndjson":
        return _ndjson(batches, path)
    raise ViewDefinitionError(f"unknown output format; expected one of {', '.join(FORMATS)}")


def _parquet(batches: Iterable[pa.RecordBatch], schema: pa.Schema, path: Path) -> int:
    rows = 0
    with pq.ParquetWriter(path, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


def _flat_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, pa.string() if pa.types.is_list(f.type) else f.type) for f in schema])


def _flatten(batch: pa.RecordBatch, flat: pa.Schema) -> pa.RecordBatch:
    arrays = []
    for field, column in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_list(field.type):
            texts = [None if v is None else orjson.dumps(v).decode() for v in column.to_pylist()]
            arrays.append(pa.array(texts, type=pa.string()))
        else:
            arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=flat)


def _csv(batches: Iterable[pa.RecordBatch], schema: pa.Schema, path: Path) -> int:
    flat = _flat_schema(schema)
    rows = 0
    with pa_csv.CSVWriter(path, flat) as writer:
        for batch in batches:
            writer.write_batch(_flatten(batch, flat))
            rows += batch.num_rows
    return rows


def _ndjson(batches: Iterable[pa.RecordBatch], path: Path) -> int:
    rows = 0
    with path.open("wb") as out:
        for batch in batches:
            for row in batch.to_pylist():
                out.write(orjson.dumps(row) + b"\n")
            rows += batch.num_rows
    return rows


def encode_batches(batches: Iterable[pa.RecordBatch], schema: pa.Schema, fmt: str) -> bytes:
    """The rows of ``batches`` as one document in ``fmt`` (``json`` too: an array of objects), in memory.

    For bounded results (an HTTP answer); raises ViewDefinitionError for an unknown format.
    """
    if fmt == "json":
        return orjson.dumps([row for batch in batches for row in batch.to_pylist()])
    if fmt == "ndjson":
        return b"".join(orjson.dumps(row) + b"\n" for batch in batches for row in batch.to_pylist())
    sink = pa.BufferOutputStream()
    if fmt == "parquet":
        with pq.ParquetWriter(sink, schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
    elif fmt == "csv":
        flat = _flat_schema(schema)
        with pa_csv.CSVWriter(sink, flat) as csv_writer:
            for batch in batches:
                csv_writer.write_batch(_flatten(batch, flat))
    else:
        raise ViewDefinitionError("unknown output format; expected json, ndjson, csv or parquet")
    return bytes(sink.getvalue())
