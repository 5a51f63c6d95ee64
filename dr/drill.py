"""``fhirlake dr drill``: the scripted proof that the data outlives the loss of a region.

1. start the primary gateway; erase one canary patient ($purge) so shredding is put to the test;
2. write canary data under load (``dr.drill_writers`` writers); once the primary's lake holds the
   first of it, replicate one round, then keep writing while replication follows;
3. lose the primary: kill its gateway (SIGKILL) and make its storage unreachable (:class:`Outage`);
4. RPO: every acknowledged write not in the secondary, by reference and version, and in seconds;
5. fail over; start the secondary gateway; RTO: from the loss until an authenticated read, an
   authenticated write and an audit append have each succeeded there;
6. verify the secondary (``dr.verify``) and, over HTTP, that the erased patient answers 410 and
   every replicated canary reads back;
7. bring the primary back, fail back, verify the primary the same way (writes made during the
   failover included), replicate forward again;
8. write the report (``dr.report``). Every DR step is audited through ``audit``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from typing import Protocol

import structlog

from audit.events import AuditAction
from dr.canary import AckedWrite, CanaryLoad, observation_body, patient_body, put
from dr.errors import DrError, DrStateError
from dr.failover import failback, failover
from dr.gateway import DrillClient, GatewayProcess, Identity, register_identity, wait_until
from dr.region import STATE_DIRS, Region, load_control, region, regions
from dr.replicate import follow, replicate_once
from dr.report import DrillReport, Timeline
from dr.stores import read_lake_seq
from dr.verify import Check, verify_region
from fhirlake.errors import FhirlakeError
from fhirlake.settings import Settings
from security.principal import Role

log = structlog.get_logger("dr.drill")

DrAudit = Callable[[AuditAction, bool], None]
_START_TIMEOUT_S = 120.0


class Outage(Protocol):
    """How a drill loses a region and gets it back."""

    def lose(self) -> None: ...

    def restore(self) -> None: ...


class DirectoryOutage:
    """The region's state directories disappear (as an unmounted volume would) and come back."""

    def __init__(self, target: Region, tag: str) -> None:
        self._target, self._tag = target, tag

    def lose(self) -> None:
        for name in STATE_DIRS:
            path = self._target.root / name
            if path.exists():
                path.rename(path.with_name(f"{name}.{self._tag}-lost"))

    def restore(self) -> None:
        for name in STATE_DIRS:
            lost = self._target.root / f"{name}.{self._tag}-lost"
            if lost.exists():
                lost.rename(self._target.root / name)


class Drill:
    """One drill run over the data dir of ``settings``; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        outage: Outage | None = None,
        audit: DrAudit | None = None,
        late_writes: int = 0,
    ) -> None:
        """``late_writes`` (tests, a forced loss): before the primary is lost, stop the load and
        replication, replicate one last round, then acknowledge that many canary patients
        (``dr-<id>-late-<n>``) that no round will carry. The report must list exactly those."""
        self.settings = settings
        self._late_writes = late_writes
        self.primary, self.secondary = regions(settings)
        self.drill_id = uuid.uuid4().hex[:10]
        self.outage = outage or DirectoryOutage(self.primary, f"drill-{self.drill_id}")
        self._audit = audit or (lambda _action, _ok: None)
        self.report = DrillReport(self.drill_id, settings.dr.rpo_target_s, settings.dr.rto_target_s)
        self.timeline = Timeline()
        self._logs = settings.data_dir.resolve() / "dr" / "reports" / f"drill-{self.drill_id}-gateways.log"
        self._emr: Identity | None = None
        self._ops: Identity | None = None

    # -- the script ---------------------------------------------------------------------------

    def run(self) -> DrillReport:
        """Run every step; a failing step ends the drill with a failed check. Returns the report."""
        if load_control(self.settings).active != self.settings.dr.primary:
            raise DrStateError("a drill starts with the primary region active; fail back first")
        self._logs.parent.mkdir(parents=True, exist_ok=True)
        gateways: list[GatewayProcess] = []
        try:
            self._script(gateways)
        except (DrError, OSError, sqlite3.Error) as exc:
            self.report.checks.append(Check("drill", False, f"the drill stopped: {type(exc).__name__}: {exc}"))
        except Exception as exc:  # a drill always ends in a report; the type names the cause
            self.report.checks.append(Check("drill", False, f"the drill stopped on an unexpected {type(exc).__name__}"))
            log.exception("dr.drill_failed")
        finally:
            for gateway in gateways:
                gateway.stop()
            self.outage.restore()
        self.report.timeline = self.timeline.steps
        return self.report

    def _script(self, gateways: list[GatewayProcess]) -> None:
        primary_gw = self._gateway(gateways)
        erased = self._erase_one(primary_gw)
        acked = self._load_and_lose(primary_gw)
        self.timeline.mark("failover")
        self._audited(AuditAction.DR_FAILOVER, lambda: failover(self.settings))
        self._measure_rpo(acked)
        audited_before = _audit_head(self.secondary, self.settings)  # the operator's failover record
        secondary_gw = self._gateway(gateways, wait=False)
        extra = self._measure_rto(secondary_gw, acked, audited_before)
        self.timeline.mark("verify secondary")
        self._verify("secondary", self.secondary, None, secondary_gw, acked + extra, erased)
        self.timeline.mark("failback")
        secondary_gw.stop()  # graceful: what it accepted reaches its lake first
        self.outage.restore()
        self._audited(AuditAction.DR_FAILBACK, lambda: failback(self.settings))
        primary_again = self._gateway(gateways)
        self.timeline.mark("verify primary")
        self._verify("primary", self.primary, self.secondary, primary_again, acked + extra, erased)
        self._audited(AuditAction.DR_REPLICATE, lambda: replicate_once(self.settings))
        self.timeline.mark("done")

    # -- steps --------------------------------------------------------------------------------

    def _gateway(self, gateways: list[GatewayProcess], *, wait: bool = True) -> GatewayProcess:
        gateway = GatewayProcess(self.settings, self._logs)
        gateway.start()
        gateways.append(gateway)
        if wait:
            probe = self._client(gateway, self._identity(Role.EMR_INTEGRATION))
            try:
                if not wait_until(probe.healthy, _START_TIMEOUT_S, 0.2):
                    raise DrError("a drill gateway did not start; see the gateway log beside the report")
            finally:
                probe.close()
        return gateway

    def _identity(self, role: Role) -> Identity:
        active = region(self.settings, load_control(self.settings).active)
        if role is Role.OPS:
            if self._ops is None:
                self._ops = register_identity(self.settings, active, Role.OPS, "system/Patient.d", "ops")
            return self._ops
        if self._emr is None:
            self._emr = register_identity(self.settings, active, Role.EMR_INTEGRATION, "system/*.cruds", "emr")
        return self._emr

    def _client(self, gateway: GatewayProcess, identity: Identity) -> DrillClient:
        return DrillClient(self.settings, identity, gateway.origin)

    def _erase_one(self, gateway: GatewayProcess) -> str:
        """A canary patient with an observation, erased before the failure; returns its id."""
        self.timeline.mark("erase a canary patient")
        pid = f"dr-{self.drill_id}-erased"
        emr = self._client(gateway, self._identity(Role.EMR_INTEGRATION))
        ops = self._client(gateway, self._identity(Role.OPS))
        try:
            if put(emr, "Patient", pid, patient_body(pid)) is None:
                raise DrError("the canary patient to erase could not be written")
            put(emr, "Observation", f"{pid}-obs", observation_body(f"{pid}-obs", pid))
            status = ops.request("POST", f"/fhir/Patient/{pid}/$purge").status_code
        finally:
            emr.close()
            ops.close()
        self.report.checks.append(Check("erase before failure", status == 200, f"$purge answered {status}"))
        return pid

    def _load_and_lose(self, gateway: GatewayProcess) -> list[AckedWrite]:
        self.timeline.mark("canary load and replication")
        load = CanaryLoad(
            lambda _n: self._client(gateway, self._identity(Role.EMR_INTEGRATION)),
            self.settings.dr.drill_writers,
            f"dr-{self.drill_id}",
        )
        stop = threading.Event()
        rounds: list[int] = []
        follower = threading.Thread(
            target=lambda: rounds.append(follow(self.settings, stop)), name="dr-follow", daemon=True
        )
        late: list[AckedWrite] = []
        load.start()
        try:
            self._first_round(load)
            follower.start()
            time.sleep(self.settings.dr.drill_load_s)
            if self._late_writes:
                late = self._write_after_last_round(gateway, load, stop, follower)
            self.timeline.mark("lose the primary")
            gateway.kill()
            self.report.loss_at = time.time()
        finally:  # also when a step above failed: no writer or round outlives this step
            stop.set()
            if follower.is_alive():
                follower.join(timeout=120)
            load.stop()
        self.outage.lose()
        # The first round, those that followed, and the last one before late writes.
        self.report.rounds = 1 + (rounds[0] if rounds else 0) + (1 if self._late_writes else 0)
        self.report.refused_writes = load.refused
        return list(load.acked) + late

    def _write_after_last_round(
        self, gateway: GatewayProcess, load: CanaryLoad, stop: threading.Event, follower: threading.Thread
    ) -> list[AckedWrite]:
        """The forced loss of ``late_writes``: writes acknowledged after the last round, before the loss."""
        stop.set()
        follower.join(timeout=120)
        load.stop()  # quiet: the last round holds every write acknowledged so far
        self._audited(AuditAction.DR_REPLICATE, lambda: replicate_once(self.settings))
        self.timeline.mark("writes after the last round")
        client = self._client(gateway, self._identity(Role.EMR_INTEGRATION))
        late: list[AckedWrite] = []
        try:
            for n in range(self._late_writes):
                rid = f"dr-{self.drill_id}-late-{n}"
                if not _append(late, put(client, "Patient", rid, patient_body(rid))):
                    raise DrError("a canary write after the last round was not acknowledged")
        finally:
            client.close()
        return late

    def _first_round(self, load: CanaryLoad) -> None:
        """Once canaries reached the primary's lake, one round: every drill replicates table snapshots."""
        wait_until(lambda: len(load.acked) >= 10, 30)
        target = _last_seq(self.primary)
        timeout = 3 * self.settings.lake.commit_interval_s + 30
        if not wait_until(lambda: read_lake_seq(self.primary) >= target, timeout, 0.2):
            raise DrError("the primary's lake writer did not commit the canary writes in time")
        self._audited(AuditAction.DR_REPLICATE, lambda: replicate_once(self.settings))

    def _measure_rpo(self, acked: list[AckedWrite]) -> None:
        """Acknowledged writes the secondary's replicated journal does not hold."""
        self.timeline.mark("measure RPO")
        present = _versions_in(self.secondary, acked)
        lost = [w for w in acked if (w.resource_type, w.id, w.version) not in present]
        self.report.set_rpo(acked, lost)

    def _measure_rto(self, gateway: GatewayProcess, acked: list[AckedWrite], audited: int) -> list[AckedWrite]:
        self.timeline.mark("measure RTO")
        client = self._client(gateway, self._identity(Role.EMR_INTEGRATION))
        replicated = [w for w in acked if w.reference not in self.report.lost_references()]
        target = replicated[0] if replicated else None
        written: list[AckedWrite] = []
        try:
            path = f"/fhir/{target.reference}" if target is not None else "/fhir/Patient?_count=1"
            read_ok = wait_until(lambda: client.request("GET", path).status_code == 200, _START_TIMEOUT_S)
            read_at = time.time()
            rid = f"dr-{self.drill_id}-after-failover"
            write_ok = wait_until(lambda: _append(written, put(client, "Patient", rid, patient_body(rid))), 60)
            write_at = time.time()
        finally:
            client.close()
        # The gateway's own records (its requests above), beyond what the operator's commands wrote.
        audit_ok = wait_until(lambda: _audit_head(self.secondary, self.settings) > audited, 30)
        audit_at = time.time()
        self.report.set_rto(read_ok, read_at, write_ok, write_at, audit_ok, audit_at)
        return written

    def _verify(
        self,
        label: str,
        target: Region,
        other: Region | None,
        gateway: GatewayProcess,
        acked: list[AckedWrite],
        erased: str,
    ) -> None:
        checks = verify_region(self.settings, target, other)
        lost = self.report.lost_references()
        client = self._client(gateway, self._identity(Role.EMR_INTEGRATION))
        try:
            statuses = [client.request("GET", f"/fhir/Patient/{erased}").status_code]
            statuses.append(client.request("GET", f"/fhir/Observation/{erased}-obs").status_code)
            unreadable = [
                w.reference
                for w in acked
                if w.reference not in lost and client.request("GET", f"/fhir/{w.reference}").status_code != 200
            ]
        finally:
            client.close()
        checks.append(Check("erased patient answers 410", statuses == [410, 410], f"answers {statuses}"))
        detail = f"{len(unreadable)} of {len(acked) - len(lost)} replicated canary writes do not read back"
        checks.append(Check("canary reads", not unreadable, detail, {"unreadable": unreadable[:50]}))
        for check in checks:
            check.name = f"{label}: {check.name}"
        self.report.checks.extend(checks)

    def _audited(self, action: AuditAction, step: Callable[[], object]) -> None:
        try:
            result = step()
        except DrError:
            self._record(action, False)
            raise
        self._record(action, True)
        to_dict = getattr(result, "to_dict", None)
        doc = to_dict() if to_dict is not None else {}
        if "action" in doc:  # failover and failback; replication rounds are counted elsewhere
            self.report.switches.append(doc)

    def _record(self, action: AuditAction, ok: bool) -> None:
        try:
            self._audit(action, ok)
        except FhirlakeError as exc:
            self.report.checks.append(Check(f"audit of {action.value}", False, f"not recorded: {exc.code}"))


def _append(found: list[AckedWrite], ack: AckedWrite | None) -> bool:
    if ack is not None:
        found.append(ack)
    return ack is not None


def _last_seq(target: Region) -> int:
    with closing(sqlite3.connect(f"file:{target.journal}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM transactions").fetchone()[0])


def _versions_in(target: Region, acked: list[AckedWrite]) -> set[tuple[str, str, int]]:
    """Which of the acknowledged versions the region's journal holds."""
    if not target.journal.exists():
        return set()
    with closing(sqlite3.connect(f"file:{target.journal}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT rtype, id, version FROM versions WHERE id LIKE 'dr-%'").fetchall()
    wanted = {(w.resource_type, w.id, w.version) for w in acked}
    return {(str(r[0]), str(r[1]), int(r[2])) for r in rows} & wanted


def _audit_head(target: Region, settings: Settings) -> int:
    """Records in the trails the region wrote itself since it became active."""
    from audit.verify import verify
    from dr.region import trail_prefix

    prefix = trail_prefix(settings, target.name)
    trails = [p for p in target.audit_dir.glob(f"{prefix}*") if p.is_dir() and not (p / "replica.json").exists()]
    return sum(verify(p).records for p in trails)
