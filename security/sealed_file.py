"""Files sealed at rest in chunks (bulk export NDJSON): streamable both ways, tamper-evident.

A file is a sequence of frames ``length (4 bytes, big-endian) | sealed chunk``;
each chunk is AES-256-GCM (``security.ciphertext``) bound to the file's record
(tenant, kind, file id), its position and whether it is the last one, so a
frame cannot be moved, dropped, repeated or appended, nor the file cut short,
without ``read_sealed`` raising ``CiphertextError``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from security.ciphertext import RecordRef, open_sealed, seal
from security.errors import CiphertextError

CHUNK_BYTES = 1 << 20
_LENGTH = 4


def _path(index: int, last: bool) -> str:
    return f"chunk/{index}/{'last' if last else 'more'}"


class SealedWriter:
    """Append plaintext; it is sealed a chunk at a time. ``close`` seals the last chunk (even empty)."""

    def __init__(self, path: Path, aead: AESGCM, key_id: bytes, record: RecordRef) -> None:
        self.path = path
        self._aead, self._key_id, self._record = aead, key_id, record
        self._buffer = bytearray()
        self._index = 0
        self._file = path.open("xb")
        os.chmod(path, 0o600)

    def write(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) > CHUNK_BYTES:
            self._frame(bytes(self._buffer[:CHUNK_BYTES]), last=False)
            del self._buffer[:CHUNK_BYTES]

    def _frame(self, chunk: bytes, *, last: bool) -> None:
        sealed = seal(self._aead, self._key_id, self._record, _path(self._index, last), chunk)
        self._file.write(len(sealed).to_bytes(_LENGTH, "big") + sealed)
        self._index += 1

    def close(self) -> None:
        if self._file.closed:
            return
        self._frame(bytes(self._buffer), last=True)
        self._buffer.clear()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def abort(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> SealedWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def read_sealed(path: Path, aead: AESGCM, record: RecordRef) -> Iterator[bytes]:
    """The plaintext chunks of a sealed file, in order; raises CiphertextError if it was altered."""
    with path.open("rb") as handle:
        index = 0
        while True:
            head = handle.read(_LENGTH)
            if len(head) < _LENGTH:
                raise CiphertextError("a sealed file ends before its last chunk")
            frame = handle.read(int.from_bytes(head, "big"))
            try:
                yield open_sealed(aead, record, _path(index, False), frame)
            except CiphertextError:
                yield open_sealed(aead, record, _path(index, True), frame)
                if handle.read(1):
                    raise CiphertextError("a sealed file continues after its last chunk") from None
                return
            index += 1
