"""``fhirlake dr …``: replication, status, failover, failback, verification and drills (docs/dr.md)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from audit.events import AuditAction
from fhirlake.settings import Settings


def register(sub: Any, add_data_dir: Callable[[argparse.ArgumentParser], None]) -> None:
    dr = sub.add_parser("dr", help="replication to the second region, failover, failback, drills")
    dr_sub = dr.add_subparsers(dest="dr_command", required=True)
    commands: list[tuple[str, str, Callable[[argparse.Namespace], int]]] = [
        ("replicate", "copy new snapshots, keys, journal and audit to the passive region", cmd_replicate),
        ("status", "replication lag per table, journal and audit trail", cmd_status),
        ("failover", "promote the passive region and fence the active one", cmd_failover),
        ("failback", "re-sync the original primary and make it active again", cmd_failback),
        ("verify", "check a region against what was last replicated into it", cmd_verify),
        ("drill", "fail over and back under load, measure RPO and RTO, write a report", cmd_drill),
    ]
    for name, help_text, func in commands:
        parser = dr_sub.add_parser(name, help=help_text)
        add_data_dir(parser)
        parser.set_defaults(func=func)
        if name == "replicate":
            parser.add_argument("--follow", action="store_true", help="keep replicating until interrupted")
        if name == "verify":
            parser.add_argument("--region", help="region to verify (default: the passive one)")


def cmd_replicate(args: argparse.Namespace) -> int:
    from dr.replicate import follow, replicate_once

    settings: Settings = args.settings_of(args)
    if not args.follow:
        args.print(replicate_once(settings).to_dict())
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    follow(settings, stop, on_round=lambda report: args.print(report.to_dict()))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from dr.lag import replication_lag

    args.print(replication_lag(args.settings_of(args)))
    return 0


def cmd_failover(args: argparse.Namespace) -> int:
    from dr.failover import failover

    args.print(failover(args.settings_of(args)).to_dict())
    return 0


def cmd_failback(args: argparse.Namespace) -> int:
    from dr.failover import failback

    args.print(failback(args.settings_of(args)).to_dict())
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from dr.region import region
    from dr.replicate import direction
    from dr.verify import verify_region

    settings: Settings = args.settings_of(args)
    source, dest = direction(settings)
    target = region(settings, args.region) if args.region else dest
    other = dest if target.name == source.name else source
    checks = verify_region(settings, target, other if other.reachable() else None)
    args.print({"region": target.name, "ok": all(c.ok for c in checks), "checks": [c.to_dict() for c in checks]})
    return 0 if all(c.ok for c in checks) else 1


def cmd_drill(args: argparse.Namespace) -> int:
    from dr.drill import Drill
    from dr.report import write_report

    settings: Settings = args.settings_of(args)
    report = Drill(settings, audit=drill_audit(settings)).run()
    path = write_report(report, settings.data_dir)
    sys.stdout.write(f"{path}\n{path.with_suffix('.md')}\n")
    sys.stdout.write(f"RPO {report.rpo_s} s (target {report.rpo_target_s} s); ")
    sys.stdout.write(f"RTO {report.rto_s} s (target {report.rto_target_s} s); {'PASSED' if report.ok else 'FAILED'}\n")
    return 0 if report.ok else 1


def drill_audit(settings: Settings) -> Callable[[AuditAction, bool], None]:
    """Each DR step of a drill as an operator audit event in the then active region."""
    from fhirlake.cli_audit import record_event

    def audit(action: AuditAction, ok: bool) -> None:
        record_event(settings, action, 0 if ok else 1, f"fhirlake dr drill {action.value}")

    return audit
