"""The audit trail: records chained, group-committed to a sink and sealed by signed checkpoints.

One writer thread owns the chain head. Callers ``submit`` events (serialized in the caller's
thread); the writer takes everything queued so far, chains it, adds the checkpoints that fall
due, and hands the lot to the sink in one ``append`` (one fsync). Each caller's future resolves
to its ``seq`` only once that append returned. If it raised, every caller of the batch gets
AuditUnavailableError, the head stays where it was, and for ``retry_after_s`` new records fail
at once instead of queueing behind a sick disk; the next append after that tries again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

import structlog

from audit.chain import ZERO_HASH, Signer, canonical, checkpoint_line, event_line, unseal
from audit.errors import AuditConfigError, AuditEventError, AuditIntegrityError, AuditUnavailableError
from audit.sinks import AuditSink

log = structlog.get_logger("audit.trail")

RESUME_WINDOW = 256  # lines whose links are checked when a trail is reopened
_Job = tuple[bytes, "Future[int]"]


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _unavailable(cause: BaseException | None = None) -> AuditUnavailableError:
    error = AuditUnavailableError("the audit record could not be made durable")
    error.__cause__ = cause
    return error


def resume_head(sink: AuditSink) -> tuple[int, bytes, bool]:
    """``(seq, hash, sealed)`` of the stored chain's head; ``sealed`` if it ends in a checkpoint.

    Checks hashes and links of the last lines. Raises AuditIntegrityError if they are broken,
    AuditUnavailableError if the sink cannot be read.
    """
    try:
        lines = sink.tail(RESUME_WINDOW)
    except OSError as exc:
        raise _unavailable(exc) from exc
    seq, head, checkpoint = 0, ZERO_HASH, None
    for n, line in enumerate(lines):
        found, prev, digest, checkpoint = unseal(line)
        if n and found != seq + 1:
            raise AuditIntegrityError("seq", f"the stored tail skips from seq {seq} to {found}")
        if (n and prev != head) or (found == 1 and prev != ZERO_HASH):
            raise AuditIntegrityError("prev", f"seq {found} does not link to the record before it")
        seq, head = found, digest
    return seq, head, checkpoint is not None or seq == 0


class AuditTrail:
    """Append-only, hash-chained audit records on an :class:`~audit.sinks.AuditSink`.

    ``seed`` (32 secret bytes, e.g. from the KMS-wrapped key store) derives the Ed25519 key that
    signs a checkpoint after every ``checkpoint_every`` records and whenever records have waited
    ``checkpoint_interval_s`` by ``clock`` (epoch seconds) without one; ``close`` writes a last one.
    """

    def __init__(
        self,
        sink: AuditSink,
        seed: bytes,
        *,
        checkpoint_every: int = 1000,
        checkpoint_interval_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        retry_after_s: float = 1.0,
        max_batch: int = 4096,
    ) -> None:
        """Resume the chain stored in ``sink`` and start the writer thread.

        Raises AuditConfigError (bad seed or limits), AuditIntegrityError (the stored tail is
        broken: nothing is appended to it), AuditUnavailableError (the sink cannot be used).
        """
        if checkpoint_every < 1 or checkpoint_interval_s <= 0 or max_batch < 1 or retry_after_s < 0:
            raise AuditConfigError("checkpoint_every, checkpoint_interval_s and max_batch must be positive")
        self._signer = Signer(seed)
        self._sink, self._clock = sink, clock
        self._every, self._interval = checkpoint_every, checkpoint_interval_s
        self._retry_after, self._max_batch = retry_after_s, max_batch
        self._tick = min(0.25, checkpoint_interval_s)
        try:
            sink.publish_key(self._signer.key_id, self._signer.public_key)
        except OSError as exc:
            raise _unavailable(exc) from exc
        self._seq, self._head, sealed = resume_head(sink)
        # An unsealed tail (the last run crashed) gets its checkpoint as soon as the writer starts.
        self._since_checkpoint = 0 if sealed else 1
        self._checkpoint_at = clock() if sealed else float("-inf")
        self._queue: list[_Job] = []
        self._cond = threading.Condition()
        self._closing = self._closed = False
        self._failed_at: float | None = None
        self._close_error: AuditUnavailableError | None = None
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    @property
    def key_id(self) -> str:
        return self._signer.key_id

    @property
    def head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the last durable record."""
        return self._seq, self._head.decode()

    @property
    def healthy(self) -> bool:
        """False while the last append failed and no later one has succeeded."""
        return self._failed_at is None

    def submit(self, event: Mapping[str, Any]) -> Future[int]:
        """Queue ``event``; the future gives its seq once durable, or raises AuditUnavailableError.

        Raises AuditEventError at once if the event is not a JSON-serializable mapping.
        """
        if not isinstance(event, Mapping):
            raise AuditEventError("an audit event must be a mapping")
        data = canonical(event)
        future: Future[int] = Future()
        with self._cond:
            if self._closing:
                future.set_exception(AuditUnavailableError("the audit trail is closed"))
            elif self._blocked():
                future.set_exception(_unavailable())
            else:
                self._queue.append((data, future))
                self._cond.notify()
        return future

    def record(self, event: Mapping[str, Any], timeout: float | None = None) -> int:
        """Append ``event`` durably and return its seq.

        Raises AuditUnavailableError if it could not be made durable (within ``timeout`` seconds;
        after a timeout it may still be written later), AuditEventError if the event is not a
        JSON-serializable mapping. Safe to call from any number of threads.
        """
        try:
            return self.submit(event).result(timeout)
        except TimeoutError:
            raise AuditUnavailableError("the audit record was not durable in time") from None

    def close(self) -> None:
        """Write what is queued and a final checkpoint, stop the writer, close the sink.

        Raises AuditUnavailableError if the final records or checkpoint could not be made durable.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        if not self._closed:
            self._closed = True
            self._sink.close()
        if self._close_error is not None:
            raise self._close_error

    def __enter__(self) -> AuditTrail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writer thread ------------------------------------------------------------------------

    def _blocked(self) -> bool:
        return self._failed_at is not None and time.monotonic() - self._failed_at < self._retry_after

    def _checkpoint_due(self) -> bool:
        return self._since_checkpoint > 0 and self._clock() - self._checkpoint_at >= self._interval

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing and not (self._checkpoint_due() and not self._blocked()):
                    self._cond.wait(self._tick)
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                finished = self._closing and not self._queue
                blocked = self._blocked() and not self._closing
            if blocked:
                for _, future in batch:
                    if future.set_running_or_notify_cancel():
                        future.set_exception(_unavailable())
            elif batch or self._checkpoint_due():
                self._commit(batch, seal=False)
            if finished:
                if self._since_checkpoint and not self._commit([], seal=True):
                    self._close_error = _unavailable()
                return

    def _commit(self, batch: list[_Job], *, seal: bool) -> bool:
        jobs = [(data, future) for data, future in batch if future.set_running_or_notify_cancel()]
        try:
            seq, head, since, checkpoint_at = self._seq, self._head, self._since_checkpoint, self._checkpoint_at
            now = self._clock()
            lines: list[bytes] = []
            index: list[bytes] = []
            seqs: list[int] = []
            for data, _ in jobs:
                seq += 1
                line, head = event_line(seq, head, data)
                lines.append(line)
                seqs.append(seq)
                since += 1
                if since >= self._every:
                    seq, head = self._checkpoint(seq, head, now, lines, index)
                    since, checkpoint_at = 0, now
            if since and (seal or now - checkpoint_at >= self._interval):
                seq, head = self._checkpoint(seq, head, now, lines, index)
                since, checkpoint_at = 0, now
            if lines:
                self._sink.append(lines, index)
        except Exception as exc:  # the batch is not part of the chain; its callers answer 503
            with self._cond:
                self._failed_at = time.monotonic()
            log.error("audit.append_failed", error=type(exc).__name__, records=len(jobs))
            for _, future in jobs:
                future.set_exception(_unavailable(exc))
            return False
        self._seq, self._head, self._since_checkpoint, self._checkpoint_at = seq, head, since, checkpoint_at
        with self._cond:
            self._failed_at = None
        for (_, future), number in zip(jobs, seqs, strict=True):
            future.set_result(number)
        return True

    def _checkpoint(
        self, seq: int, head: bytes, now: float, lines: list[bytes], index: list[bytes]
    ) -> tuple[int, bytes]:
        line, digest, entry = checkpoint_line(seq + 1, head, self._signer, _iso(now))
        lines.append(line)
        index.append(entry)
        return seq + 1, digest
