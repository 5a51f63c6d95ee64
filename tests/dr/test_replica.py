"""Table-state copies with rewritten paths: every snapshot of the copy reads like the original."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa

from lake.arrow import rows_to_arrow
from lake.catalog import LakeCatalog
from lake.replica import CopiedFile, SnapshotCopier, file_io, rows_digest


class Ledger(dict[str, CopiedFile]):
    def copied(self, source: str) -> CopiedFile | None:
        return self.get(source)

    def record(self, copy: CopiedFile) -> None:
        self[copy.source] = copy


def _rows(prefix: str, n: int, seq: int) -> pa.Table:
    now = int(time.time() * 1_000_000)
    return rows_to_arrow(
        [
            ("Patient", f"{prefix}{i}", 1, seq, now, 0, f"pk{i % 3}", None, None, None, None, None, None, b"x", b"")
            for i in range(n)
        ]
    )


def test_every_snapshot_of_a_copy_reads_like_the_original(tmp_path: Path) -> None:
    source = LakeCatalog.embedded(tmp_path / "a" / "lake")
    source.ensure_tables()
    table = source.table("patient", fresh=True)
    for k in range(3):
        with table.transaction() as tx:
            tx.append(_rows(f"s{k}-", 4, k + 1))
            tx.set_properties({"fhirlake.journal-seq": str(k + 1)})
    table = source.table("patient", fresh=True)
    src_uri = (tmp_path / "a" / "lake" / "warehouse").resolve().as_uri()
    dst_uri = (tmp_path / "b" / "lake" / "warehouse").resolve().as_uri()
    ledger = Ledger()
    copy = SnapshotCopier(file_io(src_uri), file_io(dst_uri), src_uri, dst_uri, ledger).copy_table(
        table.metadata_location
    )

    dest = LakeCatalog.embedded(tmp_path / "b" / "lake")
    dest.catalog.create_namespace("fhir")
    dest.catalog.register_table("fhir.patient", copy.metadata_location)
    copied = dest.table("patient", fresh=True)
    assert copied.location().startswith(dst_uri)
    assert [(s.snapshot_id, s.sequence_number) for s in copied.snapshots()] == [
        (s.snapshot_id, s.sequence_number) for s in table.snapshots()
    ]
    for snapshot in table.snapshots():  # time travel works on the copy, from its own files
        original = table.scan(snapshot_id=snapshot.snapshot_id).to_arrow()
        replica = copied.scan(snapshot_id=snapshot.snapshot_id).to_arrow()
        assert rows_digest(replica) == rows_digest(original)
    files = [task.file.file_path for task in copied.scan().plan_files()]
    assert files and all(path.startswith(dst_uri) for path in files)
    assert (copy.rows, copy.journal_seq) == (12, 3)
    assert copy.digest == f"{rows_digest(table.scan().to_arrow())[1]:032x}"

    with copied.transaction() as tx:  # the copy is a table like any other: it takes new commits
        tx.append(_rows("new-", 1, 9))
    assert dest.table("patient", fresh=True).scan().to_arrow().num_rows == 13


def test_rows_digest_ignores_order_and_sees_every_byte() -> None:
    table = _rows("d", 5, 1)
    assert rows_digest(table) == rows_digest(table.take([4, 2, 0, 1, 3]))
    changed = table.set_column(13, "resource", pa.array([b"x", b"x", b"y", b"x", b"x"], pa.binary()))
    assert rows_digest(changed) != rows_digest(table)
