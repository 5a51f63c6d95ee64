"""``fhirlake dr failover`` and ``fhirlake dr failback``: switching the active region.

Failover promotes the passive region: the old active one is fenced (a fence file in its root when
it can be reached, and in any case the control state no longer names it, so its journal refuses
every group commit and its gateway refuses to start), the promoted region's last committed round
is settled, and the control state names it active under a new epoch. The gateway started next
serves from it; its lake writer drains the replicated journal into its lake.

Failback reverses it once the original primary is reachable again: the region active during the
failover is fenced (its writes stop), one final round copies everything written there back to the
original primary — whose own journal is first preserved beside it, since it may hold writes that
were acknowledged but never replicated (the drill report names them) — and the control state
names the primary active again. Replication then runs primary -> secondary as before.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import asdict, dataclass
from typing import Any

from dr.errors import DrStateError, RegionUnavailableError
from dr.region import Control, fence, load_control, now_iso, region, save_control, unfence
from dr.replicate import Replicator, RoundReport, open_state
from dr.stores import register_copy, settle
from fhirlake.settings import Settings


@dataclass(slots=True)
class SwitchReport:
    action: str
    from_region: str
    to_region: str
    epoch: int
    fence_written: bool
    generation: int
    resync: dict[str, Any] | None = None
    preserved_journal: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _other(settings: Settings, name: str) -> str:
    return settings.dr.secondary if name == settings.dr.primary else settings.dr.primary


def _switch(settings: Settings, control: Control, action: str, to: str, epoch: int) -> None:
    control.history.append({"action": action, "from": control.active, "to": to, "epoch": epoch, "at": now_iso()})
    control.active, control.epoch = to, epoch
    save_control(settings, control)


def failover(settings: Settings) -> SwitchReport:
    """Promote the passive region. Raises DrStateError if it never received a complete round."""
    control = load_control(settings)
    old, new = region(settings, control.active), region(settings, _other(settings, control.active))
    _, state = open_state(settings, new)
    generation = int(state.meta().get("generation", 0))
    if generation == 0:
        raise DrStateError(f"region {new.name} never received a replication round; it cannot be promoted")
    epoch = control.epoch + 1
    fenced = fence(old, epoch, new.name) if old.root.exists() else False
    state.mark_promoted(epoch)  # a round still in flight from the old region cannot commit any more
    settle(old if old.reachable() else None, new, generation)
    unfence(new)
    _switch(settings, control, "failover", new.name, epoch)
    if old.reachable():
        register_copy(new, old)  # shreds during the failover reach the old region's key store too
    return SwitchReport("failover", old.name, new.name, epoch, fenced, generation)


def failback(settings: Settings) -> SwitchReport:
    """Re-sync the original primary from the active secondary and make it active again.

    Raises DrStateError when the primary is already active, RegionUnavailableError when the
    primary cannot be reached, ReplicationError when the re-sync round fails (nothing switched).
    """
    control = load_control(settings)
    if control.active == settings.dr.primary:
        raise DrStateError("the primary region is already active")
    current, primary = region(settings, control.active), region(settings, settings.dr.primary)
    if not primary.reachable():
        raise RegionUnavailableError(f"region {primary.name} cannot be reached; restore it before failing back")
    epoch = control.epoch + 1
    fenced = fence(current, epoch, primary.name)  # writes stop here before the final round
    preserved = _preserve_journal(primary, epoch)
    try:
        round_report: RoundReport = Replicator(settings, current, primary).run_round()
    except BaseException:
        unfence(current)  # nothing switched: the active region takes writes again
        raise
    _, back = open_state(settings, primary)
    back.mark_promoted(epoch)
    unfence(primary)
    _switch(settings, control, "failback", primary.name, epoch)
    _, forward = open_state(settings, current)
    forward.reset_tables()  # the next forward round compares against the primary's new table states
    return SwitchReport(
        "failback",
        current.name,
        primary.name,
        epoch,
        fenced,
        round_report.generation,
        round_report.to_dict(),
        preserved,
    )


def _preserve_journal(primary: Any, epoch: int) -> str | None:
    """Keep the primary's own journal beside the re-synced one (it may hold unreplicated writes)."""
    if not primary.journal.exists():
        return None
    target = primary.journal.with_name(f"journal.pre-failback-{epoch}.db")
    with (
        closing(sqlite3.connect(f"file:{primary.journal}?mode=ro", uri=True)) as src,
        closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)
    target.chmod(0o600)
    return str(target)
