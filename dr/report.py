"""The drill report: measured RPO and RTO against their targets, every check, the timeline.

Written under ``<data-dir>/dr/reports/`` as JSON (for machines and auditors' tooling) and
Markdown (for people). Acknowledged writes that did not reach the secondary are listed one by one
(type, id, version, acknowledgement time): nothing is lost silently. Only drill canary ids,
counts, times, tables and file names appear — never patient data.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dr.canary import AckedWrite
from dr.verify import Check


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


class Timeline:
    """Named steps with their start times (epoch seconds)."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []

    def mark(self, step: str) -> None:
        self.steps.append({"step": step, "at": _iso(time.time())})


@dataclass
class DrillReport:
    drill_id: str
    rpo_target_s: float
    rto_target_s: float
    started_at: float = field(default_factory=time.time)
    loss_at: float | None = None
    acknowledged: int = 0
    lost: list[AckedWrite] = field(default_factory=list)
    rpo_s: float | None = None
    rto_s: float | None = None
    rto_parts: dict[str, float | None] = field(default_factory=dict)
    rounds: int = 0
    refused_writes: int = 0
    checks: list[Check] = field(default_factory=list)
    switches: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)

    def set_rpo(self, acked: list[AckedWrite], lost: list[AckedWrite]) -> None:
        """RPO in seconds: from the oldest lost acknowledgement to the loss (0 when nothing was lost)."""
        self.acknowledged, self.lost = len(acked), sorted(lost, key=lambda w: w.acknowledged_at)
        loss = self.loss_at or time.time()
        self.rpo_s = round(max(0.0, loss - self.lost[0].acknowledged_at), 3) if self.lost else 0.0
        ok = self.rpo_s <= self.rpo_target_s
        detail = (
            f"{len(lost)} of {len(acked)} acknowledged writes lost; RPO {self.rpo_s} s (target {self.rpo_target_s} s)"
        )
        self.checks.append(Check("RPO", ok, detail, {"lost": len(lost), "acknowledged": len(acked)}))

    def set_rto(
        self, read_ok: bool, read_at: float, write_ok: bool, write_at: float, audit_ok: bool, audit_at: float
    ) -> None:
        """RTO: from the loss until the read, the write and the audit append have all succeeded."""
        loss = self.loss_at or self.started_at
        self.rto_parts = {
            "read_s": round(read_at - loss, 3) if read_ok else None,
            "write_s": round(write_at - loss, 3) if write_ok else None,
            "audit_s": round(audit_at - loss, 3) if audit_ok else None,
        }
        done = read_ok and write_ok and audit_ok
        self.rto_s = round(max(read_at, write_at, audit_at) - loss, 3) if done else None
        ok = done and self.rto_s is not None and self.rto_s <= self.rto_target_s
        detail = (
            f"RTO {self.rto_s} s (target {self.rto_target_s} s)"
            if done
            else "the secondary did not serve an authenticated read, write and audit append"
        )
        self.checks.append(Check("RTO", ok, detail, dict(self.rto_parts)))

    def lost_references(self) -> set[str]:
        return {w.reference for w in self.lost}

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "drill_id": self.drill_id,
            "ok": self.ok,
            "started_at": _iso(self.started_at),
            "primary_lost_at": _iso(self.loss_at),
            "rpo": {
                "seconds": self.rpo_s,
                "target_seconds": self.rpo_target_s,
                "acknowledged_writes": self.acknowledged,
                "lost_writes": [{**w.to_dict(), "acknowledged_at": _iso(w.acknowledged_at)} for w in self.lost],
            },
            "rto": {"seconds": self.rto_s, "target_seconds": self.rto_target_s, **self.rto_parts},
            "replication_rounds_during_load": self.rounds,
            "writes_refused_during_loss": self.refused_writes,
            "checks": [c.to_dict() for c in self.checks],
            "switches": self.switches,
            "timeline": self.timeline,
        }


def write_report(report: DrillReport, data_dir: Path) -> Path:
    """Write ``drill-<time>-<id>.json`` and ``.md`` under ``<data-dir>/dr/reports``; returns the JSON path."""
    folder = data_dir.resolve() / "dr" / "reports"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = datetime.fromtimestamp(report.started_at, UTC).strftime("%Y%m%dT%H%M%SZ")
    base = folder / f"drill-{stamp}-{report.drill_id}"
    doc = report.to_dict()
    base.with_suffix(".json").write_text(json.dumps(doc, indent=2, sort_keys=True))
    base.with_suffix(".md").write_text(markdown(doc))
    return base.with_suffix(".json")


def markdown(doc: dict[str, Any]) -> str:
    """The readable page of a report document."""
    verdict = "PASSED" if doc["ok"] else "FAILED"
    rpo, rto = doc["rpo"], doc["rto"]
    lines = [
        f"# DR drill {doc['drill_id']}: {verdict}",
        "",
        f"- started: {doc['started_at']}; primary lost: {doc['primary_lost_at']}",
        f"- **RPO**: {rpo['seconds']} s (target {rpo['target_seconds']} s); "
        f"{len(rpo['lost_writes'])} of {rpo['acknowledged_writes']} acknowledged writes lost",
        f"- **RTO**: {rto['seconds']} s (target {rto['target_seconds']} s); first read {rto.get('read_s')} s, "
        f"write {rto.get('write_s')} s, audit append {rto.get('audit_s')} s after the loss",
        f"- replication rounds during the load: {doc['replication_rounds_during_load']}",
        "",
        "## Checks",
        "",
        "| check | result | detail |",
        "|---|---|---|",
    ]
    lines += [f"| {c['name']} | {'pass' if c['ok'] else '**FAIL**'} | {c['detail']} |" for c in doc["checks"]]
    lines += ["", "## Acknowledged writes that did not reach the secondary", ""]
    if rpo["lost_writes"]:
        lines += ["| resource | version | acknowledged at |", "|---|---|---|"]
        lines += [f"| {w['reference']} | {w['version']} | {w['acknowledged_at']} |" for w in rpo["lost_writes"]]
    else:
        lines.append("None: every acknowledged write reached the secondary.")
    lines += ["", "## Timeline", ""]
    lines += [f"- {step['at']}: {step['step']}" for step in doc["timeline"]]
    return "\n".join(lines) + "\n"
