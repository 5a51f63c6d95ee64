"""Verification of a region against what was last replicated into it.

* **tables** — for every table the last round recorded: the recorded snapshot is in the table's
  metadata; every live data and delete file of it exists with the recorded size and SHA-256 (a
  mismatch names the file); the rows and the content digest computed from the files (with delete
  files: from a scan of the snapshot, deletes applied) equal the recorded ones;
* **audit** — every trail directory verifies (hashes, links, signed checkpoints, index), a copy
  holds at least the head the round recorded, and, where its origin can be read, is a byte prefix
  of the origin's trail: one chain across both regions;
* **keys** — every data key in the key store unwraps with the region's own keyring/KMS;
* **shredding** — every subject shredded in the other region (when it can be read) is shredded
  here too, and no key of a shredded subject remains.
"""

from __future__ import annotations

import hashlib
import sqlite3
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from audit.segments import INDEX_NAME, SEGMENT_PATTERN
from audit.verify import verify
from dr.region import REPLICA_MARKER, Region
from dr.replicate import open_lake, open_state
from dr.state import TableState
from fhirlake.settings import Settings
from lake.errors import LakeDataError
from lake.replica import (
    DIGEST_MOD,
    ReplicaError,
    file_digest,
    file_io,
    live_files,
    metadata_doc,
    read_bytes,
    sha256_hex,
    snapshot_digest,
)
from security.keys import CachePolicy, DataKeys
from security.keystore import KeyStore
from security.kms import load_provider


@dataclass(slots=True)
class Check:
    """One verification: its name, whether it passed, a PHI-free detail and figures."""

    name: str
    ok: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify_region(settings: Settings, target: Region, other: Region | None = None) -> list[Check]:
    """Every check of the module docstring on ``target``; ``other`` is the region it came from."""
    checks = verify_tables(settings, target)
    checks.append(verify_audit(settings, target, other))
    checks.append(verify_keys(settings, target))
    checks.append(verify_shredding(target, other))
    return checks


def verify_tables(settings: Settings, target: Region) -> list[Check]:
    """One check per replicated table (see the module docstring)."""
    lake, state = open_state(settings, target)
    del lake
    fio = file_io(target.warehouse, target.io_properties)
    catalog = open_lake(settings, target)
    checks = []
    empty = []
    for name, recorded in sorted(state.tables().items()):
        if recorded.snapshot_id is None:
            empty.append(name)  # nothing was ever written to it: one summary line below
            continue
        try:
            location = catalog.table(name, fresh=True).metadata_location
            checks.append(_verify_table(fio, state, name, recorded, location))
        except (ReplicaError, LakeDataError, OSError, ValueError) as exc:
            checks.append(Check(f"table {name}", False, f"cannot be verified: {type(exc).__name__}: {exc}"))
    if not checks and not empty:
        checks.append(Check("tables", False, "no replicated table state is recorded in this region"))
    if empty:
        checks.append(Check("empty tables", True, f"{len(empty)} tables without snapshots", {"tables": empty}))
    return checks


def _verify_table(fio: Any, state: Any, name: str, recorded: TableState, location: str) -> Check:
    doc = metadata_doc(fio, location)
    rows = total = 0
    bad: list[str] = []
    files = deletes = 0
    if recorded.snapshot_id is not None:
        for path, content in live_files(fio, doc, recorded.snapshot_id):
            files += 1
            problem = _check_file(fio, state, path)
            if problem is not None:
                bad.append(problem)
                continue
            if content == 0:
                n, digest = file_digest(read_bytes(fio, path))
                rows, total = rows + n, (total + digest) % DIGEST_MOD
            else:
                deletes += 1
    if deletes and not bad:  # the rows a reader sees: the copy's deletes must apply to the copy's files
        rows, total = snapshot_digest(fio, location, recorded.snapshot_id)
    data = {"snapshot_id": recorded.snapshot_id, "rows": rows, "expected_rows": recorded.rows, "files": files}
    data["delete_files"] = deletes
    if bad:
        return Check(f"table {name}", False, "; ".join(bad), data)
    if rows != recorded.rows or f"{total:032x}" != recorded.digest:
        detail = f"rows {rows} / digest {total:032x} differ from the replicated {recorded.rows} / {recorded.digest}"
        return Check(f"table {name}", False, detail, data)
    return Check(f"table {name}", True, f"{rows} rows in {files} files match snapshot {recorded.snapshot_id}", data)


def _check_file(fio: Any, state: Any, path: str) -> str | None:
    known = state.file_by_dest(path)
    if known is None:
        return f"file {path} is not in the replication ledger"
    try:
        data = read_bytes(fio, path)
    except (OSError, FileNotFoundError):
        return f"file {path} is missing"
    if len(data) != known.size or sha256_hex(data) != known.sha256:
        return f"file {path} does not match its replicated checksum"
    return None


def verify_audit(settings: Settings, target: Region, other: Region | None) -> Check:
    """The audit trails of ``target`` verify, and its copies are prefixes of their origins."""
    _, state = open_state(settings, target)
    heads = state.meta().get("audit_heads", {})
    trails = sorted(p for p in target.audit_dir.glob("trail-*") if p.is_dir()) if target.audit_dir.is_dir() else []
    problems, records = [], 0
    for trail in trails:
        report = verify(trail)
        records += report.records
        if not report.ok:
            error = report.first_error
            problems.append(f"{trail.name}: {error.kind if error else '?'} at {error.segment if error else '?'}")
            continue
        if (trail / REPLICA_MARKER).exists():
            if report.head_seq < int(heads.get(trail.name, 0)):
                problems.append(f"{trail.name}: copy ends at seq {report.head_seq}, below the replicated head")
            if other is not None and other.reachable() and not _is_prefix(trail, other.audit_dir / trail.name):
                problems.append(f"{trail.name}: the copy is not a prefix of the trail in region {other.name}")
    data = {"trails": len(trails), "records": records}
    if problems:
        return Check("audit chain", False, "; ".join(problems), data)
    return Check("audit chain", True, f"{len(trails)} trails, {records} records verify", data)


def _is_prefix(copy: Path, origin: Path) -> bool:
    if not origin.is_dir():
        return True  # the origin is gone; the copy verified on its own
    for path in copy.iterdir():
        if not (SEGMENT_PATTERN.fullmatch(path.name) or path.name == INDEX_NAME):
            continue
        mine = path.read_bytes()
        theirs = (origin / path.name).read_bytes() if (origin / path.name).exists() else b""
        if hashlib.sha256(theirs[: len(mine)]).digest() != hashlib.sha256(mine).digest():
            return False
    return True


def verify_keys(settings: Settings, target: Region) -> Check:
    """Every stored data key unwraps with the region's own KMS/keyring."""
    path = target.keys_dir / "keystore.db"
    if not path.exists():
        return Check("keys", False, "the region has no key store")
    provider = load_provider(settings.security.kms, target.keys_dir)
    store = KeyStore(path)
    try:
        keys = DataKeys(provider, store, settings.tenant, CachePolicy(size=16))
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            ids = [bytes(r[0]) for r in conn.execute("SELECT key_id FROM data_keys WHERE tenant=?", (settings.tenant,))]
        failed = 0
        for key_id in ids:
            try:
                keys.by_id(key_id)
            except Exception:
                failed += 1
    finally:
        store.close()
    data = {"keys": len(ids), "unusable": failed, "provider": provider.name}
    if failed or not ids:
        return Check("keys", False, f"{failed} of {len(ids)} data keys do not unwrap in region {target.name}", data)
    return Check("keys", True, f"{len(ids)} data keys unwrap in region {target.name}", data)


def verify_shredding(target: Region, other: Region | None) -> Check:
    """Subjects shredded in ``other`` are shredded in ``target``; no shredded subject keeps a key."""
    path = target.keys_dir / "keystore.db"
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        shredded = set(conn.execute("SELECT tenant, subject FROM shredded").fetchall())
        live = set(conn.execute("SELECT tenant, subject FROM data_keys").fetchall())
    problems = []
    if shredded & live:
        problems.append(f"{len(shredded & live)} shredded subjects still have a key")
    if other is not None and other.reachable() and (other.keys_dir / "keystore.db").exists():
        with closing(sqlite3.connect(f"file:{other.keys_dir / 'keystore.db'}?mode=ro", uri=True)) as conn:
            theirs = set(conn.execute("SELECT tenant, subject FROM shredded").fetchall())
        if theirs - shredded:
            problems.append(f"{len(theirs - shredded)} subjects shredded in region {other.name} are not shredded here")
    data = {"shredded_subjects": len(shredded)}
    if problems:
        return Check("shredding", False, "; ".join(problems), data)
    return Check("shredding", True, f"{len(shredded)} shredded subjects stay shredded", data)
