"""Regions, the DR control state, and fencing.

A *region* is a named set of stores: an Iceberg catalog and warehouse, the ingest journal, the
key store (with the local keyring), the client registry and the audit trails. Its state lives in
one root directory with the layout of a data dir (``journal/``, ``lake/``, ``keys/``, ``auth/``,
``audit/``); the warehouse is ``<root>/lake/warehouse`` or a bucket (``s3://…``). The embedded
default: the primary region is the data dir itself (so a data dir that predates DR needs no
migration) and the secondary lives in ``<data-dir>/regions/secondary``.

The *control state* ``<data-dir>/dr/control.json`` names the active region and an epoch that
every failover and failback increments. A region stops accepting writes when it is *fenced*: a
``dr-fence.json`` in its root, or the control state naming another region active.
:class:`RegionGuard` checks both (a ``stat`` per check) and raises RegionFencedError; the journal
calls it before every group commit and the gateway at startup.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dr.errors import DrStateError, RegionFencedError
from fhirlake.settings import RegionSettings, Settings

CONTROL_NAME = "control.json"
FENCE_NAME = "dr-fence.json"
REPLICA_MARKER = "replica.json"  # in a replicated audit trail directory: where it came from
STATE_DIRS = ("journal", "lake", "keys", "auth", "audit")
_NAME = re.compile(r"[a-z][a-z0-9-]{0,30}")


@dataclass(frozen=True, slots=True)
class Region:
    """One region's stores; see the module docstring for the layout."""

    name: str
    root: Path
    warehouse: str
    io_properties: dict[str, str] = field(default_factory=dict)
    catalog_url: str | None = field(default=None, repr=False)  # may hold a database password

    @property
    def lake_dir(self) -> Path:
        return self.root / "lake"

    @property
    def journal(self) -> Path:
        return self.root / "journal" / "journal.db"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def audit_dir(self) -> Path:
        return self.root / "audit"

    @property
    def auth_dir(self) -> Path:
        return self.root / "auth"

    @property
    def is_s3(self) -> bool:
        return self.warehouse.startswith("s3://")

    def reachable(self) -> bool:
        """Whether the region's state directories are there (a lost region's are not)."""
        return all((self.root / name).is_dir() for name in ("journal", "lake", "keys"))


def region(settings: Settings, name: str) -> Region:
    """The region ``name`` as configured (defaults: see the module docstring). Raises DrStateError."""
    if not _NAME.fullmatch(name):
        raise DrStateError("a region name is lower-case letters, digits and dashes")
    home = settings.data_dir.resolve()
    conf = settings.dr.regions.get(name, RegionSettings())
    if conf.root is not None:
        root = conf.root.resolve()
    else:
        root = home if name == settings.dr.primary else home / "regions" / name
    warehouse = conf.warehouse or (root / "lake" / "warehouse").as_uri()
    props: dict[str, str] = {}
    if conf.s3_endpoint:
        props["s3.endpoint"] = conf.s3_endpoint
    if warehouse.startswith("s3://"):
        props["s3.region"] = conf.s3_region
    url = conf.catalog_url or (settings.lake.catalog_url if name == settings.dr.primary else None)
    return Region(name, root, warehouse, props, url.get_secret_value() if url else None)


def trail_prefix(settings: Settings, name: str) -> str:
    """How the audit trails written in region ``name`` are named: ``trail-`` or ``trail-<name>-``."""
    return "trail-" if name == settings.dr.primary else f"trail-{name}-"


def regions(settings: Settings) -> tuple[Region, Region]:
    """``(primary, secondary)`` by design (not by the current role)."""
    return region(settings, settings.dr.primary), region(settings, settings.dr.secondary)


# -- control state ----------------------------------------------------------------------------


@dataclass(slots=True)
class Control:
    """Which region is active, since which epoch, and the history of switches."""

    active: str
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"active": self.active, "epoch": self.epoch, "history": self.history}


def control_path(settings: Settings) -> Path:
    return settings.data_dir.resolve() / "dr" / CONTROL_NAME


def load_control(settings: Settings) -> Control:
    """The control state; without one, the designed primary is active at epoch 0."""
    path = control_path(settings)
    if not path.exists():
        return Control(settings.dr.primary)
    try:
        doc = json.loads(path.read_bytes())
        return Control(str(doc["active"]), int(doc["epoch"]), list(doc.get("history", [])))
    except (OSError, ValueError, KeyError, TypeError):
        raise DrStateError("the DR control state is unreadable") from None


def save_control(settings: Settings, control: Control) -> None:
    """Replace the control state atomically and durably."""
    _write_json(control_path(settings), control.to_dict())


def active_region(settings: Settings) -> Region:
    """The region the gateway and operator commands work on now."""
    return region(settings, load_control(settings).active)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with tmp.open("wb") as handle:
        handle.write(json.dumps(doc, indent=2, sort_keys=True).encode())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- fencing ----------------------------------------------------------------------------------


def fence(target: Region, epoch: int, promoted: str) -> bool:
    """Write the fence file into ``target``'s root; False if its storage cannot be reached."""
    try:
        _write_json(target.root / FENCE_NAME, {"epoch": epoch, "promoted": promoted, "fenced_at": now_iso()})
    except OSError:
        return False
    return True


def unfence(target: Region) -> None:
    """Remove ``target``'s fence file (it is about to become active again)."""
    (target.root / FENCE_NAME).unlink(missing_ok=True)


def is_fenced(target: Region) -> bool:
    return (target.root / FENCE_NAME).exists()


class RegionGuard:
    """Raises RegionFencedError once ``region`` is fenced or no longer the active region."""

    def __init__(self, settings: Settings, target: Region) -> None:
        self._control = control_path(settings)
        self._fence = target.root / FENCE_NAME
        self._name = target.name
        self._primary = settings.dr.primary
        self._seen: tuple[int, int] | None = None
        self._active = self._name

    def __call__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise RegionFencedError if this region must not accept writes."""
        if self._fence.exists():
            raise RegionFencedError(f"region {self._name} is fenced by a failover")
        try:
            stat = self._control.stat()
        except FileNotFoundError:
            active = self._primary
        else:
            key = (stat.st_mtime_ns, stat.st_ino)
            if key != self._seen:
                try:
                    self._active = str(json.loads(self._control.read_bytes())["active"])
                except (OSError, ValueError, KeyError, TypeError):
                    raise RegionFencedError("the DR control state is unreadable") from None
                self._seen = key
            active = self._active
        if active != self._name:
            raise RegionFencedError(f"region {self._name} is not the active region")
