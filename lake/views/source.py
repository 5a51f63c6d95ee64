"""Sealed resource bodies of one type, streamed from its Iceberg table for views.

pyiceberg plans the files (pruned by ``resource_type`` and ``journal_seq`` statistics); each
file is then read row group by row group with pyarrow, a bounded batch at a time, instead of
materializing whole files (a compacted file may hold a million rows). Files with delete
files attached go through pyiceberg's own reader so that deleted rows stay deleted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.expressions import And, BooleanExpression, EqualTo, LessThanOrEqual
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.table import DataScan, FileScanTask

from lake.catalog import LakeCatalog
from lake.schema import table_for

_COLUMNS = ("resource_type", "id", "version", "patient_key", "deleted", "journal_seq", "resource")


@dataclass(frozen=True, slots=True)
class SealedBody:
    id: str
    version: int
    patient_key: str | None
    sealed: bytes


class LakeBodies:
    """Streams the sealed bodies of a resource type from the lake."""

    def __init__(self, catalog: LakeCatalog) -> None:
        self._catalog = catalog

    def stream(self, resource_type: str, upto_seq: int, batch_rows: int = 2048) -> Iterator[list[SealedBody]]:
        """Every stored, not deleted version of ``resource_type`` written at journal seq <= ``upto_seq``.

        Yields lists of at most ``batch_rows`` bodies; all versions are listed, current or not.
        """
        table = self._catalog.table(table_for(resource_type), fresh=True)
        condition: BooleanExpression = And(
            EqualTo("resource_type", resource_type),  # type: ignore[call-arg, arg-type]
            LessThanOrEqual("journal_seq", upto_seq),  # type: ignore[call-arg, arg-type]
        )
        scan = table.scan(row_filter=condition, selected_fields=_COLUMNS)
        for task in scan.plan_files():
            for batch in _file_batches(scan, task, batch_rows):
                kept = _matching(batch, resource_type, upto_seq)
                if kept:
                    yield kept


def _file_batches(scan: DataScan, task: FileScanTask, batch_rows: int) -> Iterator[pa.RecordBatch]:
    if task.delete_files:
        reader = ArrowScan(scan.table_metadata, scan.io, scan.projection(), scan.row_filter, scan.case_sensitive)
        yield from reader.to_record_batches([task])
        return
    with scan.io.new_input(task.file.file_path).open() as handle:
        parquet = pq.ParquetFile(handle)
        yield from parquet.iter_batches(batch_size=batch_rows, columns=list(_COLUMNS))


def _matching(batch: pa.RecordBatch, resource_type: str, upto_seq: int) -> list[SealedBody]:
    mask = pc.and_(
        pc.and_(pc.equal(batch.column("resource_type"), resource_type), pc.invert(batch.column("deleted"))),
        pc.less_equal(batch.column("journal_seq"), upto_seq),
    )
    kept = batch.filter(mask)
    return [
        SealedBody(rid, int(version), key, body)
        for rid, version, key, body in zip(
            kept.column("id").to_pylist(),
            kept.column("version").to_pylist(),
            kept.column("patient_key").to_pylist(),
            kept.column("resource").to_pylist(),
            strict=True,
        )
        if body is not None
    ]
