"""Where audit lines go: the ``AuditSink`` protocol, the registry of sinks, and the memory sink.

A sink stores lines (bytes, no newline) in order and is durable when ``append`` returns; it never
rewrites or deletes what it acknowledged. Sinks are found by name in ``SINKS`` and imported
lazily: ``file`` (:class:`audit.segments.SegmentFileSink`), ``memory`` and ``s3-worm``
(:class:`audit.worm.WormSink`, a WORM copy in S3 Object Lock); an Iceberg table sink is meant to
join as one module and one entry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from audit.errors import AuditConfigError
from audit.segments import ReadCursor, SegmentFileSink, line_seq

__all__ = ["SINKS", "AuditSink", "MemorySink", "ReadCursor", "SegmentFileSink", "load_sink"]


class AuditSink(Protocol):
    """Append-only storage of audit lines (bytes without the newline)."""

    def append(self, lines: Sequence[bytes], checkpoints: Sequence[bytes] = ()) -> None:
        """Store ``lines`` in order, then the checkpoint index lines, durably before returning.

        Raises (typically OSError) if that failed; nothing of the call may then remain readable.
        """

    def read(self) -> Iterator[bytes]:
        """Every stored line, oldest first."""

    def read_from(self, seq: int, cursor: ReadCursor | None = None) -> Iterator[tuple[bytes, ReadCursor]]:
        """The stored lines from ``seq`` on, each with a cursor that lets the next call start after it.

        ``cursor`` (from an earlier call) points just past line ``seq - 1``; without it the sink
        finds ``seq`` itself, without reading the whole trail if it can.
        """

    def tail(self, count: int) -> list[bytes]:
        """The last ``count`` stored lines (fewer if there are fewer), oldest first."""

    def publish_key(self, key_id: str, public_key: bytes) -> None:
        """Store a checkpoint-signing public key where verifiers find it (no secret needed)."""

    def close(self) -> None:
        """Release files and locks; idempotent."""


SINKS: dict[str, str] = {
    "file": "audit.segments:SegmentFileSink",
    "memory": "audit.sinks:MemorySink",
    "s3-worm": "audit.worm:WormSink",  # wraps a local sink: S3 Object Lock (compliance mode) copy
}


def load_sink(name: str) -> Callable[..., AuditSink]:
    """The factory of the sink registered as ``name``. Raises AuditConfigError for an unknown name."""
    if name not in SINKS:
        raise AuditConfigError(f"unknown audit sink {name!r}; known: {', '.join(sorted(SINKS))}")
    module, _, attr = SINKS[name].partition(":")
    factory: Callable[..., AuditSink] = getattr(importlib.import_module(module), attr)
    return factory


class MemorySink:
    """An in-memory sink for tests; set ``failure`` to make every ``append`` raise it."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.checkpoints: list[bytes] = []
        self.keys: dict[str, bytes] = {}
        self.failure: Exception | None = None

    def append(self, lines: Sequence[bytes], checkpoints: Sequence[bytes] = ()) -> None:
        if self.failure is not None:
            raise self.failure
        self.lines.extend(lines)
        self.checkpoints.extend(checkpoints)

    def read(self) -> Iterator[bytes]:
        return iter(list(self.lines))

    def read_from(self, seq: int, cursor: ReadCursor | None = None) -> Iterator[tuple[bytes, ReadCursor]]:
        lines = list(self.lines)
        start = cursor[1] if cursor else next((n for n, line in enumerate(lines) if line_seq(line) >= seq), len(lines))
        for n in range(start, len(lines)):
            yield lines[n], (0, n + 1)

    def tail(self, count: int) -> list[bytes]:
        return self.lines[-count:] if count > 0 else []

    def publish_key(self, key_id: str, public_key: bytes) -> None:
        self.keys[key_id] = public_key

    def close(self) -> None:
        pass
