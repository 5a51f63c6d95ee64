"""The Iceberg audit table: a queryable, append-only mirror of the audit trails.

The hash-chained trail (``audit.trail``) stays the record of truth; this table lets analysts
query the same events with the lake's tools. Each row is one event record of one trail, with
the columns the compliance reports filter on and the canonical event JSON.

Exactly once: every commit appends the rows of one trail and sets the table property
``fhirlake.audit-seq.<trail>`` to the highest seq it holds, in one metadata update; before
each attempt the property is re-read and rows at or below it are dropped. A crash between
reading the trail and committing therefore neither loses nor duplicates a record.

The table is append-only: this module has no delete or overwrite, and the property
``fhirlake.append-only=true`` tells maintenance to leave it alone (no compaction rewrite, no
snapshot expiry): see :func:`is_append_only`.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime

import pyarrow as pa
from pyiceberg.exceptions import (
    CommitFailedException,
    CommitStateUnknownException,
    NamespaceAlreadyExistsError,
    TableAlreadyExistsError,
)
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform
from pyiceberg.types import ListType, LongType, NestedField, StringType, TimestamptzType

from lake.catalog import LakeCatalog
from lake.errors import LakeDataError, LakeUnavailableError

APPEND_ONLY_PROPERTY = "fhirlake.append-only"
AUDIT_SEQ_PREFIX = "fhirlake.audit-seq."
_TRAIL_NAME = re.compile(r"trail-[A-Za-z0-9_-]{1,64}")
_COMMIT_ATTEMPTS = 8

AUDIT_SCHEMA = Schema(
    NestedField(1, "trail", StringType(), required=True),
    NestedField(2, "seq", LongType(), required=True),
    NestedField(3, "hash", StringType(), required=True),
    NestedField(4, "recorded", TimestamptzType(), required=True),
    NestedField(5, "action", StringType(), required=True),
    NestedField(6, "outcome", StringType(), required=True),
    NestedField(7, "client_id", StringType(), required=False),
    NestedField(8, "role", StringType(), required=False),
    NestedField(9, "fhir_user", StringType(), required=False),
    NestedField(10, "patient_keys", ListType(14, StringType(), element_required=True), required=True),
    NestedField(11, "resources", ListType(15, StringType(), element_required=True), required=True),
    NestedField(12, "purpose_of_use", ListType(16, StringType(), element_required=True), required=True),
    NestedField(13, "event", StringType(), required=True),
)
# Day partitions keep time-range questions ("who read what in March") to the days asked about.
AUDIT_PARTITION_SPEC = PartitionSpec(
    PartitionField(source_id=4, field_id=1000, transform=DayTransform(), name="recorded_day")
)
_ARROW_SCHEMA: pa.Schema = AUDIT_SCHEMA.as_arrow()

_PROPERTIES = {
    "format-version": "2",
    APPEND_ONLY_PROPERTY: "true",
    "write.parquet.compression-codec": "zstd",
    # We retry conflicts ourselves after re-reading the audit-seq property (exactly once);
    # pyiceberg's own retry would re-append blindly.
    "commit.retry.num-retries": "0",
    # The full event holds nothing worth min/max statistics; they would only grow the manifests.
    "write.metadata.metrics.column.event": "none",
}


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One event record of one trail, in the columns of the audit table."""

    trail: str
    seq: int
    hash: str
    recorded: datetime
    action: str
    outcome: str
    client_id: str | None
    role: str | None
    fhir_user: str | None
    event: str
    patient_keys: Sequence[str] = field(default_factory=tuple)
    resources: Sequence[str] = field(default_factory=tuple)
    purpose_of_use: Sequence[str] = field(default_factory=tuple)


def is_append_only(table: Table) -> bool:
    """Whether ``table`` must never be rewritten or have snapshots expired (maintenance skips it)."""
    return table.properties.get(APPEND_ONLY_PROPERTY) == "true"


def _seq_property(trail: str) -> str:
    if not _TRAIL_NAME.fullmatch(trail):
        raise LakeDataError("an audit trail name must look like 'trail-<id>'")
    return AUDIT_SEQ_PREFIX + trail


def _to_arrow(rows: Sequence[AuditRow]) -> pa.Table:
    lists = ("patient_keys", "resources", "purpose_of_use")
    records = [{**asdict(r), **{name: list(getattr(r, name)) for name in lists}} for r in rows]
    try:
        return pa.Table.from_pylist(records, schema=_ARROW_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        raise LakeDataError("an audit row does not fit the audit table schema") from None


class AuditTable:
    """The append-only Iceberg table ``<namespace>.<name>`` holding mirrored audit events."""

    def __init__(self, catalog: LakeCatalog, name: str = "audit_event") -> None:
        self._catalog = catalog
        self.name = name

    def ensure(self) -> None:
        """Create the namespace and the table if missing; (re)assert the append-only property.

        Raises LakeUnavailableError if the catalog refuses the update.
        """
        with contextlib.suppress(NamespaceAlreadyExistsError):
            self._catalog.catalog.create_namespace(self._catalog.namespace)
        try:
            table = self._catalog.catalog.create_table(
                f"{self._catalog.namespace}.{self.name}",
                schema=AUDIT_SCHEMA,
                partition_spec=AUDIT_PARTITION_SPEC,
                properties=_PROPERTIES,
            )
        except TableAlreadyExistsError:
            table = self._catalog.table(self.name, fresh=True)
            missing = {k: v for k, v in _PROPERTIES.items() if k != "format-version" and table.properties.get(k) != v}
            if missing:
                try:
                    with table.transaction() as tx:
                        tx.set_properties(missing)
                except (CommitFailedException, CommitStateUnknownException) as exc:
                    raise LakeUnavailableError("the audit table properties could not be updated") from exc
        self._catalog.remember(self.name, table)

    def table(self) -> Table:
        """The current state of the table (raises NoSuchTableError before ``ensure``)."""
        return self._catalog.table(self.name, fresh=True)

    def mirrored_seq(self, trail: str) -> int:
        """The highest seq of ``trail`` the table holds (0 if none). Raises LakeDataError on a bad trail name."""
        return int(self.table().properties.get(_seq_property(trail), "0"))

    def append(self, rows: Sequence[AuditRow], trail: str, upto_seq: int) -> int:
        """Append the rows of ``trail`` above its mirrored seq and record ``upto_seq``, in one commit.

        Rows at or below the seq already recorded are dropped, so a retried call appends nothing
        twice. Returns the rows appended. Raises LakeDataError if a row belongs to another trail,
        lies above ``upto_seq`` or does not fit the schema; LakeUnavailableError if the commit
        keeps conflicting.
        """
        key = _seq_property(trail)
        if any(r.trail != trail or r.seq > upto_seq for r in rows):
            raise LakeDataError("audit rows must belong to the trail and lie at or below upto_seq")
        for attempt in range(_COMMIT_ATTEMPTS):
            table = self.table()
            done = int(table.properties.get(key, "0"))
            if upto_seq <= done:
                return 0
            pending = [r for r in rows if r.seq > done]
            data = _to_arrow(pending) if pending else None
            try:
                with table.transaction() as tx:
                    if data is not None:
                        tx.append(data, snapshot_properties={"fhirlake.operation": "audit-mirror"})
                    tx.set_properties({key: str(upto_seq)})
            except (CommitFailedException, CommitStateUnknownException, ValueError):
                # Another committer won; pyiceberg reports a stale base as ValueError. Safe to retry:
                # the recorded seq is re-read first.
                time.sleep(0.05 * (attempt + 1))
                continue
            self._catalog.remember(self.name, table)
            return len(pending)
        raise LakeUnavailableError("the audit table commit kept conflicting")
