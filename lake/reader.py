"""Reads from the lake tables: resource bodies by id and version, table scans."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pyarrow as pa
from opentelemetry import trace
from pyiceberg.expressions import And, BooleanExpression, EqualTo, In

from lake.catalog import LakeCatalog
from lake.fastread import PatientFileIndex
from lake.schema import JOURNAL_SEQ_PROPERTY, table_for
from lake.snapshots import SnapshotUsed, VersionAsOf, versions_as_of

_tracer = trace.get_tracer("fhirlake.lake")


class LakeReader:
    def __init__(self, catalog: LakeCatalog) -> None:
        self._catalog = catalog
        self._index = PatientFileIndex()

    def bodies(self, resource_type: str, keys: Iterable[tuple[str, int, str | None]]) -> dict[tuple[str, int], bytes]:
        """Stored bodies of the given ``(id, version, patient_key)`` versions.

        The patient keys prune the scan to their bucket partitions.
        """
        wanted = list(keys)
        if not wanted:
            return {}
        with _tracer.start_as_current_span("lake.read") as span:
            span.set_attribute("fhirlake.table", table_for(resource_type))
            span.set_attribute("fhirlake.versions", len(wanted))
            return self._bodies(resource_type, wanted)

    def _bodies(self, resource_type: str, wanted: list[tuple[str, int, str | None]]) -> dict[tuple[str, int], bytes]:
        ids = sorted({k[0] for k in wanted})
        table = self._catalog.table(table_for(resource_type))
        fast = self._catalog.guard.read(lambda: self._index.read(table_for(resource_type), table, wanted), "lake.read")
        if fast is not None and len(fast) >= len({(k[0], k[1]) for k in wanted}):
            return fast
        filt = _one_of("id", ids)
        patients = {k[2] for k in wanted}
        if None not in patients:
            keys_set = sorted(p for p in patients if p is not None)
            filt = And(_one_of("patient_key", keys_set), filt)
        filt = And(_one_of("resource_type", [resource_type]), filt)
        versions = {(k[0], k[1]) for k in wanted}
        found = self._scan_bodies(resource_type, filt, versions, fresh=False)
        if len(found) < len(versions):
            # Another process (the committing gateway, `lake maintain`) may have moved the table on.
            found = self._scan_bodies(resource_type, filt, versions, fresh=True)
        return found

    def _scan_bodies(
        self, resource_type: str, filt: BooleanExpression, versions: set[tuple[str, int]], *, fresh: bool
    ) -> dict[tuple[str, int], bytes]:
        table = self._catalog.table(table_for(resource_type), fresh=fresh)
        scan = table.scan(row_filter=filt, selected_fields=("id", "version", "resource"))
        data = self._catalog.guard.read(scan.to_arrow, "lake.read")
        found: dict[tuple[str, int], bytes] = {}
        for rid, version, body in zip(
            data.column("id").to_pylist(),
            data.column("version").to_pylist(),
            data.column("resource").to_pylist(),
            strict=True,
        ):
            if (rid, version) in versions and body is not None:
                found[(rid, version)] = body
        return found

    def versions_as_of(
        self, resource_type: str, at_us: int, *, ids: list[str] | None = None, patient_keys: list[str] | None = None
    ) -> tuple[SnapshotUsed, list[VersionAsOf]]:
        """``resource_type`` rows as of ``at_us`` (see ``lake.snapshots.versions_as_of``)."""
        return versions_as_of(self._catalog, resource_type, at_us, ids=ids, patient_keys=patient_keys)

    def pinned_rows(
        self, resource_type: str, patient_keys: list[str] | None = None
    ) -> tuple[int, Iterator[list[tuple[str, int, bytes | None]]]]:
        """Stream ``(id, version, resource)`` rows of ``resource_type`` from the current snapshot, batch by batch.

        Also returns the journal sequence that snapshot covers: versions accepted
        after it are not in these rows (memory stays bounded by one batch).
        """
        table = self._catalog.table(table_for(resource_type), fresh=True)
        done = int(table.properties.get(JOURNAL_SEQ_PROPERTY, "0"))
        snapshot = table.current_snapshot()
        if snapshot is None:
            return done, iter(())
        filt = _one_of("resource_type", [resource_type])
        if patient_keys is not None:
            filt = And(filt, _one_of("patient_key", patient_keys or [""]))
        scan = table.scan(
            row_filter=filt, selected_fields=("id", "version", "resource"), snapshot_id=snapshot.snapshot_id
        )
        reader = self._catalog.guard.read(scan.to_arrow_batch_reader, "lake.scan")

        def batches() -> Iterator[list[tuple[str, int, bytes | None]]]:
            for batch in reader:
                yield list(
                    zip(
                        batch.column("id").to_pylist(),
                        batch.column("version").to_pylist(),
                        batch.column("resource").to_pylist(),
                        strict=True,
                    )
                )

        return done, batches()

    def scan(self, table_name: str, columns: tuple[str, ...] = ("*",)) -> pa.Table:
        """The whole current snapshot of ``table_name`` (for operators and tests)."""
        scan = self._catalog.table(table_name, fresh=True).scan(selected_fields=columns)
        return self._catalog.guard.read(scan.to_arrow, "lake.scan")


def _one_of(column: str, values: list[str]) -> BooleanExpression:
    # pyiceberg's predicates are pydantic models whose generated signature mypy misreads.
    if len(values) == 1:
        return EqualTo(column, values[0])  # type: ignore[call-arg, arg-type]
    return In(column, values)  # type: ignore[call-arg, arg-type]
