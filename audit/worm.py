"""The WORM sink: the local hash-chained trail, shipped in the background to S3 Object Lock.

:class:`WormSink` wraps a local primary sink (normally the segment files) and copies every line,
in seq order, into objects ``<prefix>/<first:012d>-<last:012d>.jsonl`` (the seqs of their first
and last line) locked in COMPLIANCE mode for ``retention_days`` (at least six years, HIPAA
164.316(b)(2)), and every public key into ``<prefix>/public_keys/<key_id>.json``.

Order of an ``append``: the primary first (fsynced: the record is durable and the request may
answer), then the shipper thread is woken; ``append`` never waits for S3. The shipper reads from
the primary after the last shipped seq, PUTs up to 1000 lines or 1 MiB per object (HEAD first,
:meth:`audit.lockedbucket.LockedBucket.put_locked`), and after each PUT saves its position in
``worm-position.json`` beside the segments (temp file, fsync, rename, fsync of the directory).
A failed PUT is retried with backoff through the ``audit_worm`` circuit breaker; while the
breaker is open the shipper waits and tries again, forever. Each failed attempt counts in
``fhirlake_audit_sink_failures_total{sink="worm"}``; the lag shows in
``fhirlake_audit_worm_backlog_records`` and ``…_backlog_seconds`` and in :meth:`WormSink.backlog`.

Guarantee: the local trail is the reference. The WORM copy lags it by the backlog and never
diverges from it: objects hold the local bytes, contiguous, in order. A crash between a PUT and
the position save re-ships the same range on restart (the shipper first looks for an object that
starts at its next seq and ships exactly that range again): the bytes are identical, so the HEAD
check accepts them and nothing is rewritten. A key holding other bytes stops the shipper
(AuditIntegrityError, logged); so does a bucket found misconfigured. Lines not yet shipped when
the process stops are shipped by the next start.

At construction the bucket is checked (:meth:`LockedBucket.check`): versioning Enabled, Object
Lock Enabled, a default COMPLIANCE retention of at least ``retention_days``. A misconfigured
bucket refuses the start (AuditConfigError); an unreachable one does not: the sink starts
degraded and the shipper checks the bucket before its first PUT.
"""

from __future__ import annotations

import base64
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import structlog

from audit.errors import AuditConfigError, AuditIntegrityError, AuditUnavailableError
from audit.lockedbucket import LockedBucket, batch_name, s3_client
from audit.segments import KEYS_NAME, ReadCursor, SegmentFileSink, line_seq, read_public_keys
from audit.sinks import AuditSink
from resilience import Breaker, BreakerPolicy, CircuitOpenError, RetryPolicy, retry
from security.secretfile import write_private
from telemetry.metrics import AUDIT_SINK_FAILURES, AUDIT_WORM_BACKLOG_RECORDS, AUDIT_WORM_BACKLOG_SECONDS

__all__ = ["MIN_RETENTION_DAYS", "POSITION_NAME", "WormSink"]

log = structlog.get_logger("audit.worm")

MIN_RETENTION_DAYS = 2190  # six years: HIPAA 164.316(b)(2) retention of required documentation
POSITION_NAME = "worm-position.json"
BATCH_LINES = 1000
BATCH_BYTES = 1 << 20
SHIP_RETRY = RetryPolicy(attempts=3, base_s=0.1, max_s=1.0)  # PUTs are idempotent: HEAD first, same bytes
_IDLE_S = 1.0  # how often an idle shipper looks for work it was not woken for
_LIVE: weakref.WeakSet[WormSink] = weakref.WeakSet()  # open sinks, read by the backlog gauges at scrape time
_GAUGES = threading.Lock()
_gauges_installed = False


def _install_gauges() -> None:
    """Point the backlog gauges at the open sinks, once per process (not at import: no side effects)."""
    global _gauges_installed
    with _GAUGES:
        if _gauges_installed:
            return
        AUDIT_WORM_BACKLOG_RECORDS.set_function(lambda: float(sum(s.backlog()[0] for s in list(_LIVE))))
        AUDIT_WORM_BACKLOG_SECONDS.set_function(lambda: max((s.backlog()[1] for s in list(_LIVE)), default=0.0))
        _gauges_installed = True


class _Halted(Exception):
    """The shipper must stop: the bucket or its contents contradict the local trail."""


def _read_position(path: Path | None) -> tuple[int, set[str], float | None]:
    """``(last shipped seq, key ids shipped, mtime)`` of the position file; zeros if there is none.

    An unreadable file counts as none: shipping then starts over from seq 1, finds each stored
    object by its first seq and re-ships exactly its range, which the HEAD check accepts.
    """
    if path is None or not path.exists():
        return 0, set(), None
    try:
        doc = orjson.loads(path.read_bytes())
        return int(doc["seq"]), {str(k) for k in doc.get("keys", [])}, path.stat().st_mtime
    except (OSError, ValueError, KeyError, TypeError):
        log.error("audit.worm_position_unreadable", file=path.name)
        return 0, set(), None


def _write_position(path: Path, seq: int, keys: set[str]) -> None:
    write_private(path, orjson.dumps({"keys": sorted(keys), "seq": seq}))  # atomic, fsynced with its directory


def _key_body(key_id: str, public_key: bytes) -> bytes:
    entry = {"algorithm": "Ed25519", "public_key": base64.b64encode(public_key).decode()}
    return orjson.dumps({key_id: entry}, option=orjson.OPT_SORT_KEYS)


class WormSink:
    """A local primary sink, shipped asynchronously to an S3 Object Lock (COMPLIANCE) copy."""

    def __init__(
        self,
        primary: AuditSink,
        *,
        bucket: str,
        prefix: str,
        retention_days: int = MIN_RETENTION_DAYS,
        region: str,
        endpoint_url: str | None = None,
        client: Any = None,
        timeout_s: float = 5.0,
        breaker: Breaker | None = None,
        retry_policy: RetryPolicy = SHIP_RETRY,
        drain_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Wrap ``primary``, check the bucket and start the shipper thread.

        Raises AuditConfigError if ``retention_days`` is under six years or S3 answers that the bucket
        is not set up for WORM. An unreachable S3 is not an error: the sink starts degraded.
        """
        if retention_days < MIN_RETENTION_DAYS:
            raise AuditConfigError(f"audit WORM retention must be at least {MIN_RETENTION_DAYS} days (HIPAA)")
        if not bucket:
            raise AuditConfigError("audit WORM sink needs a bucket name")
        self._primary = primary
        client = client or s3_client(region, endpoint_url, timeout_s)
        self._bucket = LockedBucket(client, bucket, prefix, timedelta(days=retention_days))
        self.breaker = breaker or Breaker(
            "audit_worm",
            BreakerPolicy(failure_threshold=3, open_s=5.0, slow_call_s=timeout_s),
            (AuditUnavailableError,),
        )
        self._retry, self._drain_s, self._clock = retry_policy, drain_timeout_s, clock
        self._bucket_ok = self._first_check()
        self._lock = threading.Condition()
        self._position_lock = threading.Lock()
        self._resume(primary.directory if isinstance(primary, SegmentFileSink) else None)
        self._closing, self._stop = False, threading.Event()
        self._drain_until = float("inf")
        _install_gauges()
        _LIVE.add(self)
        self._thread = threading.Thread(target=self._run, name="audit-worm-shipper", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"WormSink({self._bucket!r}, breaker={self.breaker.state.value})"

    def _first_check(self) -> bool:
        try:
            self.breaker.call(self._bucket.check)
        except (AuditUnavailableError, CircuitOpenError) as exc:
            AUDIT_SINK_FAILURES.labels("worm").inc()
            log.warning("audit.worm_degraded_at_start", error=type(exc).__name__)
            return False
        return True

    def _resume(self, directory: Path | None) -> None:
        """Pick up where the last run stopped: its saved position, the local tail, unshipped keys."""
        self._position_path = directory / POSITION_NAME if directory else None
        shipped, self._keys_shipped, saved_at = _read_position(self._position_path)
        tail = self._primary.tail(1)
        local = line_seq(tail[0]) if tail else 0
        if local < shipped:
            log.error("audit.worm_position_ahead_of_trail", shipped_seq=shipped, local_seq=local)
        self._shipped, self._durable = shipped, max(shipped, local)
        self._cursor: ReadCursor | None = None  # just past line ``_shipped`` once known: no search needed
        self._marks: deque[tuple[int, float]] = deque()  # (last seq of an append, when it was made)
        if self._durable > shipped:  # left by the last run: at most as old as its last ship
            self._marks.append((self._durable, saved_at or self._clock()))
        self._keys: deque[tuple[str, bytes]] = deque(self._unshipped_local_keys(directory))
        self._catching_up = True  # objects from an earlier run may start at the next seq

    def _unshipped_local_keys(self, directory: Path | None) -> list[tuple[str, bytes]]:
        if directory is None or not (directory / KEYS_NAME).exists():
            return []
        keys = read_public_keys(directory / KEYS_NAME)
        return [(kid, key) for kid, key in sorted(keys.items()) if kid not in self._keys_shipped]

    def key_for(self, name: str) -> str:
        """The object key of ``name`` under the sink's prefix."""
        return self._bucket.key_for(name)

    def check_bucket(self) -> None:
        """See :meth:`audit.lockedbucket.LockedBucket.check`; raises what it raises."""
        self._bucket.check()

    # -- the sink ----------------------------------------------------------------------------------

    def append(self, lines: Sequence[bytes], checkpoints: Sequence[bytes] = ()) -> None:
        """Store the batch in the primary (durable on return) and wake the shipper; never waits for S3.

        Raises AuditUnavailableError once closed, AuditIntegrityError if the last line has no seq,
        or what the primary raises (nothing was then stored).
        """
        if not lines:
            return
        last = line_seq(lines[-1])
        if self._closing:
            raise AuditUnavailableError("the audit WORM sink is closed")
        self._primary.append(lines, checkpoints)
        with self._lock:
            self._durable = max(self._durable, last)
            self._marks.append((last, self._clock()))
            self._lock.notify_all()

    def publish_key(self, key_id: str, public_key: bytes) -> None:
        """Publish in the primary, then (shipped in the background) as ``<prefix>/public_keys/<key_id>.json``.

        One object per key id rather than one ``public_keys.json``: adding a key must not overwrite.
        Raises what the primary raises (e.g. AuditIntegrityError if the id names another key).
        """
        self._primary.publish_key(key_id, public_key)
        with self._lock:
            if key_id not in self._keys_shipped and all(kid != key_id for kid, _ in self._keys):
                self._keys.append((key_id, public_key))
                self._lock.notify_all()

    def read(self) -> Iterator[bytes]:
        return self._primary.read()

    def read_from(self, seq: int, cursor: ReadCursor | None = None) -> Iterator[tuple[bytes, ReadCursor]]:
        return self._primary.read_from(seq, cursor)

    def tail(self, count: int) -> list[bytes]:
        return self._primary.tail(count)

    @property
    def shipping(self) -> bool:
        """False once the shipper stopped: closed, or halted by a misconfigured or contradicting bucket."""
        return self._thread.is_alive()

    def backlog(self) -> tuple[int, float]:
        """``(lines not yet shipped, age in seconds of the oldest of them)``; ``(0, 0.0)`` when caught up."""
        with self._lock:
            records = self._durable - self._shipped
            age = self._clock() - self._marks[0][1] if records and self._marks else 0.0
        return records, max(0.0, age)

    def close(self) -> None:
        """Stop accepting, ship what is left for at most ``drain_timeout_s``, save the position, close.

        What could not be shipped stays in the primary and ships on the next start. Idempotent.
        """
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._drain_until = time.monotonic() + self._drain_s
            self._lock.notify_all()
        self._stop.set()
        self._thread.join(self._drain_s + 1.0)
        if self._thread.is_alive():
            log.warning("audit.worm_shipper_still_busy_at_close")
        self._save_position()
        records, age = self.backlog()
        if records:
            log.warning("audit.worm_backlog_at_close", records=records, oldest_s=round(age, 1))
        _LIVE.discard(self)
        self._primary.close()

    # -- the shipper thread ------------------------------------------------------------------------

    def _has_work(self) -> bool:
        return bool(self._keys) or self._durable > self._shipped

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._has_work() and not self._closing:
                    self._lock.wait(_IDLE_S)
                if self._closing and (not self._has_work() or time.monotonic() >= self._drain_until):
                    return
                work = self._has_work()
            if not work:
                continue
            try:
                retry(self._ship_next, self._retry, (AuditUnavailableError,), operation="audit_worm_ship")
            except CircuitOpenError:
                self._pause(max(self.breaker.retry_after_s(), 0.05))
            except AuditUnavailableError:
                self._pause(self._retry.max_s)
            except _Halted as exc:
                log.error("audit.worm_shipping_stopped", reason=str(exc))
                return
            except OSError as exc:  # the local trail could not be read: try again later
                log.error("audit.worm_read_failed", error=type(exc).__name__)
                self._pause(self._retry.max_s)

    def _pause(self, seconds: float) -> None:
        if self._closing:  # draining: never past the drain deadline, and no busy loop either
            time.sleep(max(0.0, min(seconds, self._drain_until - time.monotonic())))
        else:
            self._stop.wait(seconds)

    def _ship_next(self) -> None:
        """One attempt: through the breaker, ship the next key or batch. Counts and logs a failure."""
        try:
            self.breaker.call(self._ship_once)
        except AuditUnavailableError as exc:
            AUDIT_SINK_FAILURES.labels("worm").inc()
            log.warning("audit.worm_ship_failed", first_seq=self._shipped + 1, error=str(exc))
            raise
        except AuditConfigError as exc:
            raise _Halted(f"the WORM bucket is misconfigured: {exc}") from exc
        except AuditIntegrityError as exc:
            raise _Halted(f"the WORM copy contradicts the local trail: {exc.kind}") from exc

    def _ship_once(self) -> None:
        if not self._bucket_ok:
            self._bucket.check()
            self._bucket_ok = True
        with self._lock:
            key = self._keys[0] if self._keys else None
        if key is not None:
            self._bucket.put_locked(self.key_for(f"public_keys/{key[0]}.json"), _key_body(*key), "application/json")
            with self._lock:
                self._keys.popleft()
                self._keys_shipped.add(key[0])
        else:
            self._ship_batch()
        self._save_position()

    def _ship_batch(self) -> None:
        with self._lock:
            first, durable, cursor = self._shipped + 1, self._durable, self._cursor
        upto = min(durable, first + BATCH_LINES - 1)
        if self._catching_up:
            stored = self._bucket.batch_from(first)
            if stored is not None and stored > durable:
                raise AuditIntegrityError("surplus", f"the WORM copy holds seqs up to {stored}, past the trail")
            self._catching_up = stored is not None
            upto = stored or upto
        lines, cursor = self._read_batch(first, upto, cursor, exact=self._catching_up)
        self._bucket.put_locked(
            self.key_for(batch_name(first, first + len(lines) - 1)), b"\n".join(lines) + b"\n", "application/x-ndjson"
        )
        with self._lock:
            self._shipped, self._cursor = first + len(lines) - 1, cursor
            while self._marks and self._marks[0][0] <= self._shipped:
                self._marks.popleft()

    def _read_batch(
        self, first: int, upto: int, cursor: ReadCursor | None, *, exact: bool
    ) -> tuple[list[bytes], ReadCursor | None]:
        lines: list[bytes] = []
        size = 0
        for line, after in self._primary.read_from(first, cursor):
            if line_seq(line) != first + len(lines):
                raise AuditIntegrityError("seq", f"the local trail skips after seq {first + len(lines) - 1}")
            lines.append(line)
            size, cursor = size + len(line) + 1, after
            if first + len(lines) > upto or (size >= BATCH_BYTES and not exact):
                break
        if not lines or (exact and first + len(lines) - 1 != upto):
            raise AuditIntegrityError("seq", f"the local trail lacks durable seqs from {first + len(lines)}")
        return lines, cursor

    def _save_position(self) -> None:
        if self._position_path is None:
            return
        with self._lock:
            seq, keys = self._shipped, set(self._keys_shipped)
        with self._position_lock:
            try:
                _write_position(self._position_path, seq, keys)
            except OSError as exc:  # the next save carries the position; at worst a restart re-ships
                log.error("audit.worm_position_not_saved", error=type(exc).__name__)
