"""``fhirlake dr replicate``: rounds that bring the passive region up to the active one.

One round (:meth:`Replicator.run_round`):

1. finish the previous round's swap of staged stores (``dr.stores.settle``), if a crash left one;
2. read the journal position the source lake holds, then pin every table's current metadata;
3. stage consistent backups of the journal, key store, client registry, keyring and secrets;
4. append new audit lines (segments, checkpoint index, public keys);
5. copy every new table state: data and delete files, manifests, manifest lists, metadata;
6. ONE transaction in the destination catalog database moves every changed table's pointer and
   records the round (``dr.state.ReplicaState.commit``);
7. swap the staged stores into place and register the destination key store as a copy.

A crash anywhere before 6 leaves the destination on the previous round (copied files are in the
ledger and are not copied again); a crash after 6 is finished by step 1 of the next round.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog
from pyiceberg.exceptions import NamespaceAlreadyExistsError

from dr.audit_copy import copy_trails
from dr.errors import RegionUnavailableError, ReplicationError
from dr.region import Region, active_region, load_control, region, trail_prefix
from dr.state import ReplicaState
from dr.stores import JournalPoint, read_lake_seq, register_copy, settle, stage
from fhirlake.settings import Settings
from lake.catalog import LakeCatalog
from lake.replica import SnapshotCopier, TableCopy, file_io

log = structlog.get_logger("dr.replicate")

CATALOG_NAME = "fhirlake"
_STAGE_ATTEMPTS = 3
CrashHook = Callable[[str], None]


@dataclass(slots=True)
class RoundReport:
    """What one round did (no resource contents: tables, counts, positions)."""

    source: str
    dest: str
    generation: int
    tables_changed: list[str] = field(default_factory=list)
    files_copied: int = 0
    files_skipped: int = 0
    bytes_copied: int = 0
    journal_seq: int = 0
    lake_seq: int = 0
    audit_bytes: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def direction(settings: Settings) -> tuple[Region, Region]:
    """``(source, dest)``: from the active region to the other one."""
    active = active_region(settings)
    other = settings.dr.secondary if active.name == settings.dr.primary else settings.dr.primary
    return active, region(settings, other)


def open_lake(settings: Settings, target: Region) -> LakeCatalog:
    """The catalog of ``target`` (its SQL database and warehouse)."""
    return LakeCatalog.embedded(
        target.lake_dir,
        settings.lake.namespace,
        settings.lake.patient_buckets,
        warehouse=target.warehouse,
        io_properties=target.io_properties,
        catalog_url=target.catalog_url,
    )


def open_state(settings: Settings, dest: Region) -> tuple[LakeCatalog, ReplicaState]:
    lake = open_lake(settings, dest)
    with contextlib.suppress(NamespaceAlreadyExistsError):
        lake.catalog.create_namespace(settings.lake.namespace)
    return lake, ReplicaState(lake.catalog.engine, CATALOG_NAME, settings.lake.namespace)  # type: ignore[attr-defined]


class Replicator:
    """Replicates ``source`` into ``dest``; ``crash`` (tests) is called at named points of a round."""

    def __init__(self, settings: Settings, source: Region, dest: Region, *, crash: CrashHook | None = None) -> None:
        self._settings, self.source, self.dest = settings, source, dest
        self._crash = crash or (lambda _point: None)
        self._namespace = settings.lake.namespace
        self.copier: SnapshotCopier | None = None  # of the last round, for its counters

    def run_round(self) -> RoundReport:
        """Run one round. Raises RegionUnavailableError (source unreachable), ReplicationError."""
        started = time.monotonic()
        epoch = load_control(self._settings).epoch
        if not self.source.reachable():
            raise RegionUnavailableError(f"region {self.source.name} cannot be reached")
        self.dest.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        _, state = open_state(self._settings, self.dest)
        committed = int(state.meta().get("generation", 0))
        settle(self.source, self.dest, committed)
        generation = committed + 1
        report = RoundReport(self.source.name, self.dest.name, generation)
        pinned, point = self._pin_and_stage(generation)
        audit = copy_trails(self.source, self.dest, trail_prefix(self._settings, self.source.name))
        try:
            copies = self._copy_tables(pinned, state, report)
        except OSError as exc:  # a file of the source is missing or unreadable: nothing is advanced
            raise ReplicationError(f"a table file could not be copied: {type(exc).__name__}: {exc}") from exc
        self._crash("before-commit")
        meta = {
            "generation": generation,
            "source": self.source.name,
            "journal_seq": point.last_seq,
            "journal_accepted_us": point.accepted_us,
            "lake_seq": point.lake_seq,
            "audit_heads": audit.heads,
            "round_at": time.time(),
        }
        state.commit({name: pinned[name] for name in copies}, copies, meta, epoch=epoch)
        self._crash("after-commit")
        settle(self.source, self.dest, generation)
        register_copy(self.source, self.dest)
        report.journal_seq, report.lake_seq, report.audit_bytes = point.last_seq, point.lake_seq, audit.bytes
        report.seconds = round(time.monotonic() - started, 3)
        log.info("dr.round", **{k: v for k, v in report.to_dict().items() if k != "tables_changed"})
        return report

    def _pin_and_stage(self, generation: int) -> tuple[dict[str, str], JournalPoint]:
        source_lake = open_lake(self._settings, self.source)
        for attempt in range(_STAGE_ATTEMPTS):
            lake_seq = read_lake_seq(self.source)  # before pinning: the pinned tables hold at least this
            pinned = {
                ident[-1]: source_lake.catalog.load_table(ident).metadata_location
                for ident in source_lake.catalog.list_tables(self._namespace)
            }
            try:
                return pinned, stage(self.source, self.dest, generation, lake_seq)
            except ReplicationError:
                if attempt == _STAGE_ATTEMPTS - 1:
                    raise
        raise ReplicationError("unreachable")  # pragma: no cover

    def _copy_tables(self, pinned: dict[str, str], state: ReplicaState, report: RoundReport) -> dict[str, TableCopy]:
        copier = self.copier = SnapshotCopier(
            file_io(self.source.warehouse, self.source.io_properties),
            file_io(self.dest.warehouse, self.dest.io_properties),
            self.source.warehouse,
            self.dest.warehouse,
            state,
        )
        recorded = state.tables()
        copies: dict[str, TableCopy] = {}
        for name, location in sorted(pinned.items()):
            known = recorded.get(name)
            if known is not None and known.source_metadata == location:
                continue
            copies[name] = copier.copy_table(location)
            report.tables_changed.append(name)
            self._crash("table-copied")
        report.files_copied, report.files_skipped, report.bytes_copied = (
            copier.files_copied,
            copier.files_skipped,
            copier.bytes_copied,
        )
        return copies


def replicate_once(settings: Settings, *, crash: CrashHook | None = None) -> RoundReport:
    """One round from the active region to the other."""
    source, dest = direction(settings)
    return Replicator(settings, source, dest, crash=crash).run_round()


def follow(settings: Settings, stop: threading.Event, on_round: Callable[[RoundReport], None] | None = None) -> int:
    """Run rounds every ``dr.follow_interval_s`` until ``stop`` is set; returns rounds run.

    A failed round is logged and retried at the next interval; a failover (the active region
    changed) ends the loop.
    """
    rounds = 0
    epoch = load_control(settings).epoch
    while not stop.is_set():
        if load_control(settings).epoch != epoch:
            log.warning("dr.follow_stopped", reason="the active region changed")
            break
        try:
            report = replicate_once(settings)
        except Exception as exc:  # keep following; nothing of a failed round was advanced
            log.error("dr.round_failed", error=type(exc).__name__)
        else:
            rounds += 1
            if on_round is not None:
                on_round(report)
        stop.wait(settings.dr.follow_interval_s)
    return rounds
