"""``fhirlake views run FILE``: a SQL on FHIR v2 ViewDefinition over the installation's current resources.

Columns that reach PHI (the field policy: names, identifiers, telecom, addresses, birth
dates, ...) are refused unless ``--phi`` says to drop them, mask them (null values), or,
for an authorized operator extract, allow them. The output file is written under a
temporary name with owner-only permissions and renamed into place once complete.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fhirlake.errors import FhirlakeError
from ingest.errors import ForbiddenError
from lake.views import FORMATS, ColumnAction, ViewPlan
from lake.views.errors import ViewDefinitionError

PHI_MODES = ("refuse", "drop", "mask", "allow")


def register(sub: Any, add_data_dir: Callable[[argparse.ArgumentParser], None]) -> None:
    views = sub.add_parser("views", help="SQL on FHIR v2 views over the lake")
    views_sub = views.add_subparsers(dest="views_command", required=True)
    run = views_sub.add_parser("run", help="run a ViewDefinition (JSON file) and write its rows")
    run.add_argument("file", type=Path, help="the ViewDefinition, as JSON")
    run.add_argument("--format", choices=FORMATS, default="parquet", help="output format (default parquet)")
    run.add_argument("--out", type=Path, required=True, help="file to write the rows to")
    run.add_argument(
        "--phi",
        choices=PHI_MODES,
        default="refuse",
        help="columns reaching PHI: refuse the view (default), drop or mask them, or allow them",
    )
    run.add_argument("--batch-rows", type=int, default=8192, help="rows per record batch (memory bound)")
    add_data_dir(run)
    run.set_defaults(func=cmd_run)


def _load_view(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise ViewDefinitionError("the view file cannot be read as JSON") from None


def _plan(view: Any, mode: str) -> ViewPlan:
    from ingest.views import phi_columns, phi_policy

    flagged = phi_columns(view)
    if flagged and mode == "refuse":
        raise ForbiddenError(
            f"columns reach PHI elements: {', '.join(flagged)}; use --phi drop, mask or allow (audited)"
        )
    if flagged and mode in ("drop", "mask"):
        return ViewPlan(view, phi_policy(view, ColumnAction(mode)))
    return ViewPlan(view)


def cmd_run(args: argparse.Namespace) -> int:
    from fhirlake.bootstrap import Paths, open_catalog, open_keys, open_sealer
    from ingest.journal import Journal
    from ingest.views import ViewRunner

    settings = args.settings_of(args)
    paths = Paths(settings.data_dir.resolve())
    if not paths.journal.exists():
        raise FhirlakeError("no fhirlake installation in the data directory")
    if args.batch_rows < 1:
        raise ViewDefinitionError("--batch-rows must be at least 1")
    plan = _plan(_load_view(args.file), args.phi)
    keys = open_keys(settings)
    journal = Journal(paths.journal)
    out: Path = args.out
    partial = out.with_name(f".{out.name}.partial")
    try:
        runner = ViewRunner(journal, open_catalog(settings), open_sealer(settings, keys))
        try:
            os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        except OSError:
            raise FhirlakeError("the output file cannot be created") from None
        report = runner.run(plan, args.format, partial, args.batch_rows)
        partial.replace(out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        journal.close()
        keys.store.close()
    args.print(
        {
            "resource": report.resource_type,
            "rows": report.rows,
            "columns": report.columns,
            "phi_columns": report.phi_columns,
            "phi": args.phi,
            "skipped_erased": report.skipped_erased,
            "format": args.format,
            "out": str(out.resolve()),
        }
    )
    return 0
