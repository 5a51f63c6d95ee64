"""``fhirlake audit …``: verify the audit trail under ``<data-dir>/audit``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fhirlake.audit_reports_cli import register_reports

AUDIT_DIR = "audit"  # under the data directory


def register(sub: Any, add_data_dir: Callable[[argparse.ArgumentParser], None]) -> None:
    audit = sub.add_parser("audit", help="audit trail: verify hash chain, checkpoints and signatures")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    register_reports(audit_sub, add_data_dir)
    verify = audit_sub.add_parser(
        "verify", help="check every record, link and checkpoint signature; exit 1 and name the place if broken"
    )
    verify.add_argument("--dir", type=Path, help="verify this trail directory instead of <data-dir>/audit")
    verify.add_argument(
        "--public-keys",
        type=Path,
        help="trusted public_keys.json kept apart from the trail (default: the one inside the trail)",
    )
    add_data_dir(verify)
    verify.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    from audit.segments import read_public_keys
    from audit.verify import verify

    trusted = read_public_keys(args.public_keys) if args.public_keys else None
    if args.dir:
        directories = [args.dir]
    else:  # one trail per gateway process: trail-1, trail-2, …
        root = args.settings_of(args).data_dir / AUDIT_DIR
        directories = sorted(p for p in root.glob("trail-*") if p.is_dir()) or [root]
    reports = []
    for directory in directories:
        report = verify(directory, public_keys=trusted)
        reports.append({"directory": str(Path(directory).resolve()), **report.to_dict()})
    args.print(reports[0] if len(reports) == 1 else {"trails": reports, "ok": all(r["ok"] for r in reports)})
    return 0 if all(r["ok"] for r in reports) else 1
