"""Secret files under the data dir: created 0600 on first start, refused when exposed."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from security.errors import KeyStoreError

SECRET_BYTES = 32


def load_or_create_secret(path: Path) -> bytes:
    """Read the 32-byte secret at ``path``, creating it (mode 0600) on first start.

    Raises KeyStoreError when the file exists but is unreadable, has the wrong
    size, or is readable by group or others.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first
            pass
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_bytes(SECRET_BYTES))
                handle.flush()
                os.fsync(handle.fileno())
    return read_secret(path)


def read_secret(path: Path) -> bytes:
    """Read an existing 32-byte secret file (raises KeyStoreError when missing or unsafe)."""
    try:
        mode = path.stat().st_mode
        key = path.read_bytes()
    except OSError:
        raise KeyStoreError("a secret file is missing or unreadable") from None
    if mode & 0o077:
        raise KeyStoreError("a secret file is accessible by group or others; expected mode 0600")
    if len(key) != SECRET_BYTES:
        raise KeyStoreError("a secret file has the wrong size")
    return key


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data``, mode 0600, durable before returning."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
