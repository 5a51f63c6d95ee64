"""Replication of a region's small stores: journal, key store, client registry, keyring, secrets.

Each round takes an online, consistent SQLite backup of every database and a copy of every
secret file into ``<dest>/dr-staging/gen-N/``; after the round's catalog commit records
generation N, :func:`settle` moves them into place (``os.replace``, one file at a time). A reader
of the destination calls :func:`settle` first, so it sees generation N complete; a staging
directory of a generation that was never committed is deleted.

The journal copy is made consistent with the lake copy of the same round: its ``lake_seq`` is set
to the position the copied tables are known to hold (so the destination's lake writer commits the
rest, exactly once, from the journal), and a copy whose bodies were pruned beyond that position
is refused (the round is retried).

The key store needs one more step: a shred runs in the source first, then in every registered
copy (the destination's key store is one). Before a swap the tombstones of the current copy are
applied to the staged one, and after it every tombstone of the source is applied again: a
backup taken just before a shred never brings the destroyed key back.
"""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import structlog

from dr.errors import ReplicationError
from dr.region import Region
from security.keystore import KeyStore

log = structlog.get_logger("dr.stores")

DATABASES = ("journal/journal.db", "keys/keystore.db", "auth/auth.db", "auth/break_glass.db")
SECRET_FILES = ("keys/keyring.json", "keys/master.key", "auth/signing.key")
STAGING = "dr-staging"
JOURNAL, KEYSTORE = DATABASES[0], DATABASES[1]


@dataclass(frozen=True, slots=True)
class JournalPoint:
    """What the staged journal copy holds: last seq, its acceptance time (µs), the lake position."""

    last_seq: int
    accepted_us: int | None
    lake_seq: int


def staging_dir(dest: Region, generation: int) -> Path:
    return dest.root / STAGING / f"gen-{generation}"


def read_lake_seq(source: Region) -> int:
    """The journal position the source's lake tables hold (read before the tables are pinned)."""
    if not source.journal.exists():
        return 0
    with closing(_open_ro(source.journal)) as conn:
        row = conn.execute("SELECT value FROM state WHERE name='lake_seq'").fetchone()
    return 0 if row is None else int(row[0])


def stage(source: Region, dest: Region, generation: int, lake_seq: int) -> JournalPoint:
    """Back up every store of ``source`` into the staging directory of ``generation``.

    Raises ReplicationError when the journal copy cannot be made consistent with ``lake_seq``,
    RegionUnavailableError-like OSError/sqlite3.Error when the source cannot be read.
    """
    target = staging_dir(dest, generation)
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True, mode=0o700)
    for rel in DATABASES:
        if (source.root / rel).exists():
            _backup(source.root / rel, target / rel)
    for rel in SECRET_FILES:
        if (source.root / rel).exists():
            (target / rel).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            shutil.copyfile(source.root / rel, target / rel)
            (target / rel).chmod(0o600)
    if not (target / JOURNAL).exists():
        return JournalPoint(0, None, lake_seq)
    return _fix_journal(target / JOURNAL, lake_seq)


def _open_ro(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def _backup(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    source = _open_ro(src)
    target = sqlite3.connect(dst)
    try:
        source.backup(target)
        # One self-contained file: the destination opens it in its own journal mode later.
        target.execute("PRAGMA journal_mode=DELETE")
    finally:
        target.close()
        source.close()
    dst.chmod(0o600)


def _fix_journal(path: Path, lake_seq: int) -> JournalPoint:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        pruned = conn.execute("SELECT value FROM state WHERE name='pruned_seq'").fetchone()
        if pruned is not None and int(pruned[0]) > lake_seq:
            raise ReplicationError("the journal pruned rows the lake copy does not hold yet; retry the round")
        conn.execute(
            "INSERT INTO state(name, value) VALUES ('lake_seq', ?) "
            "ON CONFLICT(name) DO UPDATE SET value=excluded.value",
            (str(lake_seq),),
        )
        row = conn.execute("SELECT seq, accepted FROM transactions ORDER BY seq DESC LIMIT 1").fetchone()
    finally:
        conn.close()
    return JournalPoint(0 if row is None else int(row[0]), None if row is None else int(row[1]), lake_seq)


def settle(source: Region | None, dest: Region, committed: int) -> None:
    """Move the staged stores of generation ``committed`` into place; drop uncommitted staging.

    With ``source`` reachable, re-apply its key-store tombstones to the destination afterwards.
    """
    base = dest.root / STAGING
    if not base.exists():
        return
    for gen_dir in sorted(base.iterdir()):
        number = int(gen_dir.name.removeprefix("gen-")) if gen_dir.name.startswith("gen-") else -1
        if number == committed:
            _swap(gen_dir, dest.root)
        shutil.rmtree(gen_dir, ignore_errors=True)
    if source is not None and (source.root / KEYSTORE).exists():
        reapply_shreds(source.root / KEYSTORE, dest.root / KEYSTORE)


def _swap(gen_dir: Path, root: Path) -> None:
    for staged in sorted(p for p in gen_dir.rglob("*") if p.is_file()):
        rel = staged.relative_to(gen_dir)
        final = root / rel
        if str(rel) == KEYSTORE and final.exists():
            # A shred since the backup reached the current copy (a registered copy): keep it.
            reapply_shreds(final, staged)
        final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        for suffix in ("-wal", "-shm", "-journal"):  # leftovers of an older copy must not meet the new one
            final.with_name(final.name + suffix).unlink(missing_ok=True)
        staged.replace(final)


def reapply_shreds(source_store: Path, dest_store: Path) -> int:
    """Shred in ``dest_store`` every subject shredded in ``source_store``; returns how many were new."""
    if not dest_store.exists():
        return 0
    # Read-write connections: a key store whose writer was killed may hold a hot rollback
    # journal, which only a writer can roll back before reading.
    with closing(sqlite3.connect(source_store, timeout=30.0)) as conn:
        wanted = set(conn.execute("SELECT tenant, subject FROM shredded").fetchall())
    with closing(sqlite3.connect(dest_store, timeout=30.0)) as conn:
        have = set(conn.execute("SELECT tenant, subject FROM shredded").fetchall())
    missing = sorted(wanted - have)
    if missing:
        store = KeyStore(dest_store)
        try:
            for tenant, subject in missing:
                store.shred(str(tenant), str(subject))
        finally:
            store.close()
    return len(missing)


def register_copy(source: Region, dest: Region) -> None:
    """Register the destination key store as a copy of the source's, so shreds reach it at once."""
    if not (source.root / KEYSTORE).exists():
        return
    store = KeyStore(source.root / KEYSTORE)
    try:
        if str((dest.root / KEYSTORE).resolve()) not in set(store.copies()):
            store.register_copy(dest.root / KEYSTORE)
    finally:
        store.close()
