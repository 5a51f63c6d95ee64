"""Replication of the audit trails: append-only copies of segments, checkpoint index and keys.

Only the trails a region writes itself are copied from it (``trail-N`` from the primary,
``trail-<region>-N`` from another region, see ``dr.region.trail_prefix``); copies are never copied
back. Each file is copied from the destination's current length on, whole lines only (a line
being written is left for the next round), after checking that the destination is a prefix of the
source — a copy that diverged is an integrity error, never overwritten. ``public_keys.json`` is
replaced when it changed. A copied trail directory carries ``replica.json`` naming its origin.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from audit.segments import INDEX_NAME, KEYS_NAME, SEGMENT_PATTERN
from dr.errors import ReplicationError
from dr.region import REPLICA_MARKER, Region, now_iso


@dataclass(slots=True)
class AuditCopy:
    files: int = 0
    bytes: int = 0
    heads: dict[str, int] = field(default_factory=dict)  # trail -> last seq in the destination


def own_trails(audit_dir: Path, prefix: str) -> list[Path]:
    """The trail directories a region wrote itself (``prefix`` + number)."""
    pattern = re.compile(re.escape(prefix) + r"\d+")
    if not audit_dir.is_dir():
        return []
    return sorted(p for p in audit_dir.iterdir() if p.is_dir() and pattern.fullmatch(p.name))


def copy_trails(source: Region, dest: Region, prefix: str) -> AuditCopy:
    """Bring the destination's copies of ``source``'s own trails up to date. Raises ReplicationError."""
    report = AuditCopy()
    for trail in own_trails(source.audit_dir, prefix):
        target = dest.audit_dir / trail.name
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        marker = target / REPLICA_MARKER
        if not marker.exists():
            marker.write_text(json.dumps({"origin": source.name, "since": now_iso()}))
        # The index and the keys first: the segments read after them hold every checkpoint they name.
        names = [INDEX_NAME, KEYS_NAME, *sorted(p.name for p in trail.iterdir() if SEGMENT_PATTERN.fullmatch(p.name))]
        for path in (trail / name for name in names if (trail / name).exists()):
            if SEGMENT_PATTERN.fullmatch(path.name) or path.name == INDEX_NAME:
                added = _append_new_lines(path, target / path.name)
                report.bytes += added
                report.files += 1 if added else 0
            elif path.name == KEYS_NAME and _differs(path, target / path.name):
                _replace(path, target / path.name)
                report.files += 1
        report.heads[trail.name] = last_seq(target)
    return report


def _append_new_lines(src: Path, dst: Path) -> int:
    have = dst.stat().st_size if dst.exists() else 0
    with src.open("rb") as f:
        if have:
            _check_prefix(f, dst, have)
        f.seek(have)
        data = f.read()
    data = data[: data.rfind(b"\n") + 1]  # whole lines only
    if not data:
        return 0
    fd = os.open(dst, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(data)


def _check_prefix(f: object, dst: Path, have: int) -> None:
    tail_len = min(have, 4096)
    with dst.open("rb") as d:
        d.seek(have - tail_len)
        mine = d.read(tail_len)
    f.seek(have - tail_len)  # type: ignore[attr-defined]
    theirs = f.read(tail_len)  # type: ignore[attr-defined]
    if mine != theirs:
        raise ReplicationError(f"the copy of audit file {dst.parent.name}/{dst.name} diverged from its source")


def _differs(src: Path, dst: Path) -> bool:
    return not dst.exists() or dst.read_bytes() != src.read_bytes()


def _replace(src: Path, dst: Path) -> None:
    tmp = dst.with_suffix(".tmp")
    tmp.write_bytes(src.read_bytes())
    tmp.chmod(0o600)
    os.replace(tmp, dst)


def last_seq(trail: Path) -> int:
    """The seq of the last whole line in a trail directory's segments (0 when empty)."""
    segments = sorted(p for p in trail.iterdir() if SEGMENT_PATTERN.fullmatch(p.name))
    for path in reversed(segments):
        data = path.read_bytes()
        end = data.rfind(b"\n")
        if end <= 0:
            continue
        start = data.rfind(b"\n", 0, end) + 1
        try:
            return int(json.loads(data[start:end])["seq"])
        except (ValueError, KeyError, TypeError):
            raise ReplicationError(f"audit trail {trail.name} ends in a line without seq") from None
    return 0
