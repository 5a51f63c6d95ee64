"""The segment-file sink: the trail's on-disk layout, append-only, fsynced before ``append`` returns.

A trail directory (mode 0700) holds::

    segment-000001.log, segment-000002.log, …   the chain, one record per line (mode 0600)
    checkpoints.log                              one line per checkpoint: {"hash","seq","sig"}
    public_keys.json                             key id -> {"algorithm": "Ed25519", "public_key": b64}

Fsync policy (``fsync="always"``, the default and the mode for production): ``append`` writes
the batch with one ``write`` on an ``O_APPEND`` descriptor, fsyncs the segment, then appends to
``checkpoints.log`` and fsyncs it, and only then returns. Creating a segment (first write,
rotation past ``segment_bytes``) also fsyncs the directory, so the new name survives a crash.
``fsync="data"`` uses ``fdatasync`` (the same durability for appended bytes on Linux; mtime may
lag). No mode skips the sync: a record the caller was told about must survive a power cut.

Nothing acknowledged is ever rewritten or deleted. The only bytes the sink removes are those of
an ``append`` that raised (its callers were told the record was *not* made): they are truncated
away at once, or before the next write if that failed too, so a failed batch never becomes part
of the chain. A torn last line left by a crash mid-write (never acknowledged) is cut on open.
``public_keys.json`` is replaced atomically when a key is added; keys are never removed. An
exclusive ``flock`` on ``checkpoints.log`` keeps a second writer out.

:meth:`SegmentFileSink.read_from` reads from a seq on without scanning the whole trail: the first
line of each segment (cached, it never changes) says which segment holds the seq, and a
:data:`ReadCursor` handed back with every line lets the next call start right there.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import os
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import orjson
import structlog

from audit.errors import AuditConfigError, AuditIntegrityError

log = structlog.get_logger("audit.segments")

FsyncPolicy = Literal["always", "data"]
ReadCursor = tuple[int, int]  # (segment number, byte offset just past a line): where the next read starts
SEGMENT_PATTERN = re.compile(r"segment-(\d{6,})\.log")
INDEX_NAME = "checkpoints.log"
KEYS_NAME = "public_keys.json"


def segment_name(number: int) -> str:
    return f"segment-{number:06d}.log"


def segment_paths(directory: Path) -> list[tuple[int, Path]]:
    """The segment files of a trail directory as ``(number, path)``, in order."""
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := SEGMENT_PATTERN.fullmatch(p.name))]
    return sorted(found)


def line_seq(line: bytes) -> int:
    """The ``seq`` member of a stored line. Raises AuditIntegrityError if it has none."""
    try:
        return int(orjson.loads(line)["seq"])
    except (ValueError, KeyError, TypeError):
        raise AuditIntegrityError("seq", "a stored audit line has no seq") from None


def _first_line(path: Path) -> bytes | None:
    with path.open("rb") as f:
        line = f.readline()
    return line[:-1] if line.endswith(b"\n") else None


def read_public_keys(path: Path) -> dict[str, bytes]:
    """Key id -> raw public key from a ``public_keys.json``. Raises AuditIntegrityError if unreadable."""
    try:
        doc = orjson.loads(path.read_bytes())
        return {kid: base64.b64decode(entry["public_key"], validate=True) for kid, entry in doc.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise AuditIntegrityError("key", f"{path.name} is missing or unreadable") from None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _open_append(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _tail_lines(path: Path, count: int, block: int = 1 << 16) -> list[bytes]:
    with path.open("rb") as f:
        pos = f.seek(0, os.SEEK_END)
        data = b""
        while pos > 0 and data.count(b"\n") <= count:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    lines = data.split(b"\n")
    lines.pop()  # what follows the last newline: nothing, or a torn line never acknowledged
    if pos > 0:
        lines.pop(0)  # may have been cut by the block boundary
    return lines[-count:] if count > 0 else []


class SegmentFileSink:
    """Append-only segment files in one directory; see the module docstring for layout and fsync policy."""

    def __init__(self, directory: Path, *, segment_bytes: int = 64 << 20, fsync: FsyncPolicy = "always") -> None:
        """Open (or create) the trail in ``directory`` and lock it against a second writer.

        Raises AuditConfigError if another writer holds it, OSError if it cannot be opened for appending.
        """
        if fsync not in ("always", "data"):
            raise AuditConfigError("fsync policy must be 'always' or 'data'")
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        self._segment_bytes, self._fsync = segment_bytes, fsync
        self._lock = threading.Lock()
        self._fd = -1
        self._index_fd = _open_append(self.directory / INDEX_NAME)
        try:  # before touching anything: two writers would interleave two chains
            fcntl.flock(self._index_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise AuditConfigError("another writer holds this audit trail; give each process its own") from None
        self._index_durable = self._cut_torn_tail(self._index_fd, self.directory / INDEX_NAME)
        segments = segment_paths(self.directory)
        self._number = segments[-1][0] if segments else 0
        self._size = self._durable = 0
        if segments:
            self._fd = _open_append(segments[-1][1])
            self._size = self._durable = self._cut_torn_tail(self._fd, segments[-1][1])
        self._dirty = False
        self._heads: dict[int, int] = {}  # segment number -> seq of its first line

    def _sync(self, fd: int) -> None:
        if self._fsync == "always":
            os.fsync(fd)
        else:
            os.fdatasync(fd)

    def _cut_torn_tail(self, fd: int, path: Path) -> int:
        size = os.fstat(fd).st_size
        if not size:
            return 0
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) == b"\n":
                return size
        keep = path.read_bytes().rfind(b"\n") + 1
        os.ftruncate(fd, keep)
        self._sync(fd)
        log.warning("audit.torn_tail_removed", file=path.name, removed_bytes=size - keep)
        return keep

    def append(self, lines: Sequence[bytes], checkpoints: Sequence[bytes] = ()) -> None:
        """Raises OSError if the lines could not be made durable; nothing of them then remains."""
        data = b"\n".join(lines) + b"\n"
        with self._lock:
            if self._index_fd < 0:
                raise OSError(errno.EBADF, "audit sink is closed")
            if self._dirty:
                self._repair()
            try:
                if self._fd < 0 or (self._size and self._size + len(data) > self._segment_bytes):
                    self._rotate()
                self._dirty = True
                _write_all(self._fd, data)
                self._sync(self._fd)
                if checkpoints:
                    _write_all(self._index_fd, b"".join(c + b"\n" for c in checkpoints))
                    self._sync(self._index_fd)
            except BaseException:
                try:
                    self._repair()
                except OSError:
                    log.error("audit.sink_repair_failed")  # retried before the next write
                raise
            self._dirty = False
            self._size = self._durable = self._durable + len(data)
            self._index_durable += sum(len(c) + 1 for c in checkpoints)

    def _repair(self) -> None:
        if self._fd >= 0:
            os.ftruncate(self._fd, self._durable)
            self._sync(self._fd)
        os.ftruncate(self._index_fd, self._index_durable)
        self._sync(self._index_fd)
        self._size = self._durable
        self._dirty = False

    def _rotate(self) -> None:
        path = self.directory / segment_name(self._number + 1)
        fd = _open_append(path)
        try:
            if os.fstat(fd).st_size:  # a segment we do not know about appeared: refuse to mix chains
                raise OSError(errno.EEXIST, "audit segment already holds data")
            _fsync_dir(self.directory)
        except BaseException:
            os.close(fd)
            raise
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._number, self._size, self._durable = fd, self._number + 1, 0, 0

    def read(self) -> Iterator[bytes]:
        for _, path in segment_paths(self.directory):
            with path.open("rb") as f:
                for line in f:
                    yield line.rstrip(b"\n")

    def read_from(self, seq: int, cursor: ReadCursor | None = None) -> Iterator[tuple[bytes, ReadCursor]]:
        """The complete stored lines from ``seq`` on, oldest first, each with the cursor just past it.

        A ``cursor`` from an earlier call must point just past line ``seq - 1``; reading then starts
        there. Without one, only the segment that holds ``seq`` is read, from its start. A line still
        being written (no newline yet) ends the iteration. Raises AuditIntegrityError if a line
        before ``seq`` in that segment has no seq.
        """
        segments = segment_paths(self.directory)
        if cursor is None:
            start, offset, skipping = self._segment_holding(seq, segments), 0, True
        else:
            (start, offset), skipping = cursor, False
        for number, path in segments:
            if number < start:
                continue
            with path.open("rb") as f:
                pos = f.seek(offset if number == start else 0)
                for raw in f:
                    if not raw.endswith(b"\n"):
                        return
                    pos += len(raw)
                    line = raw[:-1]
                    if skipping and line_seq(line) < seq:
                        continue
                    skipping = False
                    yield line, (number, pos)

    def _segment_holding(self, seq: int, segments: list[tuple[int, Path]]) -> int:
        chosen = segments[0][0] if segments else 0
        for number, path in segments:
            if number not in self._heads:
                head = _first_line(path)
                if head is None:
                    break
                self._heads[number] = line_seq(head)
            if self._heads[number] > seq:
                break
            chosen = number
        return chosen

    def tail(self, count: int) -> list[bytes]:
        found: list[bytes] = []
        for _, path in reversed(segment_paths(self.directory)):
            if len(found) >= count:
                break
            found = _tail_lines(path, count - len(found)) + found
        return found

    def publish_key(self, key_id: str, public_key: bytes) -> None:
        """Add a key to ``public_keys.json``. Raises AuditIntegrityError if the id names another key."""
        path = self.directory / KEYS_NAME
        keys: dict[str, Any] = orjson.loads(path.read_bytes()) if path.exists() else {}
        encoded = base64.b64encode(public_key).decode()
        if key_id in keys:
            if keys[key_id].get("public_key") != encoded:
                raise AuditIntegrityError("key", f"{KEYS_NAME} holds another key under this key id")
            return
        keys[key_id] = {"algorithm": "Ed25519", "public_key": encoded}
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, orjson.dumps(keys, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(self.directory)

    def close(self) -> None:
        with self._lock:
            for fd in (self._fd, self._index_fd):
                if fd >= 0:
                    os.close(fd)
            self._fd = self._index_fd = -1
