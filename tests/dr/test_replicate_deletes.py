"""Delete files replicate: a merge-on-read snapshot reads the same in the secondary, and verify guards it.

The primary's patient table gets a snapshot whose position-delete file removes one row (see
``tests/fixtures/deletes.py``: pyiceberg 0.12 does not write such snapshots itself). A round of
``dr replicate`` must carry the delete file and its ``deletes`` manifest, with the paths inside
them pointing at the secondary's own data file.
"""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dr.region import regions
from dr.replicate import open_lake, open_state, replicate_once
from dr.verify import verify_region, verify_tables
from fhirlake.settings import Settings
from lake.replica import rows_digest
from tests.dr.support import Callers, gateway, post_canary
from tests.fixtures.app import make_settings
from tests.fixtures.deletes import delete_positions


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


def _local(uri: str) -> Path:
    assert uri.startswith("file://"), uri
    return Path(uri.removeprefix("file://"))


def test_a_position_delete_file_replicates_and_verify_guards_it(settings: Settings) -> None:
    primary, secondary = regions(settings)
    with gateway(settings, Callers()) as client:
        for _ in range(3):
            post_canary(client)
    table = open_lake(settings, primary).table("patient", fresh=True)
    before = table.scan().to_arrow()
    victim = next(task.file for task in table.scan().plan_files() if task.file.record_count >= 1)
    deleted_id = pq.read_table(_local(victim.file_path)).column("id")[0].as_py()
    source_delete = delete_positions(table, victim, [0])
    table = open_lake(settings, primary).table("patient", fresh=True)
    on_primary = table.scan().to_arrow()
    assert on_primary.num_rows == before.num_rows - 1 and deleted_id not in on_primary.column("id").to_pylist()

    replicate_once(settings)

    # (a) the delete file is in the secondary, recorded in the ledger with the bytes it has there.
    # Its positions are the primary's; its file_path column names the secondary's copy of the data
    # file (Iceberg paths are absolute, so a position-delete file cannot stay byte for byte the same).
    dest_delete = secondary.warehouse + source_delete.removeprefix(primary.warehouse)
    dest_victim = secondary.warehouse + victim.file_path.removeprefix(primary.warehouse)
    _, state = open_state(settings, secondary)
    ledger = state.file_by_dest(dest_delete)
    assert ledger is not None and ledger.kind == "delete" and ledger.source == source_delete
    copied = _local(dest_delete).read_bytes()
    assert len(copied) == ledger.size
    src_rows, dst_rows = pq.read_table(_local(source_delete)), pq.read_table(io.BytesIO(copied))
    assert dst_rows.column("pos").to_pylist() == src_rows.column("pos").to_pylist() == [0]
    assert dst_rows.column("file_path").to_pylist() == [dest_victim]
    assert _local(dest_victim).read_bytes() == _local(victim.file_path).read_bytes()  # data files: byte for byte

    # (b) the secondary reads what the primary reads: the row is deleted there too, from its own files.
    replica = open_lake(settings, secondary).table("patient", fresh=True)
    assert replica.current_snapshot() is not None and table.current_snapshot() is not None
    assert replica.current_snapshot().snapshot_id == table.current_snapshot().snapshot_id  # type: ignore[union-attr]
    on_secondary = replica.scan().to_arrow()
    assert on_secondary.num_rows == on_primary.num_rows
    assert rows_digest(on_secondary) == rows_digest(on_primary)
    assert deleted_id not in on_secondary.column("id").to_pylist()
    tasks = [t for t in replica.scan().plan_files() if t.delete_files]
    assert [(t.file.file_path, [d.file_path for d in t.delete_files]) for t in tasks] == [(dest_victim, [dest_delete])]

    # (c) dr verify passes, and it checked the delete file.
    checks = verify_region(settings, secondary, primary)
    assert [c.name for c in checks if not c.ok] == []
    patient = next(c for c in checks if c.name == "table patient")
    assert patient.data["delete_files"] == 1 and patient.data["rows"] == on_primary.num_rows

    # (d) a corrupted copy of the delete file fails verify, and the failure names it.
    raw = bytearray(copied)
    raw[len(raw) // 2] ^= 0xFF
    _local(dest_delete).write_bytes(bytes(raw))
    failed = [c for c in verify_tables(settings, secondary) if not c.ok]
    assert [c.name for c in failed] == ["table patient"]
    assert Path(dest_delete).name in failed[0].detail and "checksum" in failed[0].detail
