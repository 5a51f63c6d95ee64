"""The ``fhirlake`` command line. Every state-touching command takes ``--data-dir``."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fhirlake import audit_cli, certs_cli, cli_audit, clients_cli, dr_cli, ingest_cli, keys_cli, views_cli, writer_cli
from fhirlake.errors import FhirlakeError
from fhirlake.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings()
    if getattr(args, "data_dir", None):
        settings.data_dir = Path(args.data_dir)
    return settings


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", help="directory holding all state (default: FHIRLAKE_DATA_DIR or ./fhirlake-data)"
    )


def _fresh_metrics_dir(data_dir: Path) -> Path:
    """Where the processes of ``serve --workers N`` keep their counters, so any of them can answer a
    scrape with the sum of all (prometheus_client's multiprocess mode). Emptied at each start."""
    path = data_dir.resolve() / "run" / "metrics"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, mode=0o700)
    return path


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from fhirlake import logs
    from fhirlake.metrics import MULTIPROC_ENV
    from fhirlake.server import DEMO_ENV, build_app
    from fhirlake.tls_serve import uvicorn_tls_options

    settings = _settings(args)
    if args.host:
        settings.server.host = args.host
    if args.port is not None:
        settings.server.port = args.port
    logs.configure(settings.log_level, settings.log_json)
    options: dict[str, Any] = {
        "host": settings.server.host,
        "port": settings.server.port,
        "access_log": False,  # the gateway logs route templates; raw paths and queries may carry PHI
        "log_config": None,
        "timeout_graceful_shutdown": 30,
    }
    if args.insecure_http:
        settings.tls.enabled = False
        os.environ["FHIRLAKE_TLS__ENABLED"] = "false"  # for --workers processes
    options.update(uvicorn_tls_options(settings))
    if args.workers > 1:
        # Several gateway processes share the journal and the lake; each validates in-process,
        # and one of them (holding the lake lock) commits to Iceberg.
        os.environ["FHIRLAKE_DATA_DIR"] = str(settings.data_dir.resolve())
        os.environ.setdefault("FHIRLAKE_INGEST__VALIDATION_WORKERS", "0")
        os.environ[MULTIPROC_ENV] = str(_fresh_metrics_dir(settings.data_dir))
        os.environ[DEMO_ENV] = "1" if args.demo else "0"
        uvicorn.run("fhirlake.server:app_from_env", factory=True, workers=args.workers, **options)
        return 0
    uvicorn.run(build_app(settings, demo=args.demo), **options)
    return 0


def cmd_lake_maintain(args: argparse.Namespace) -> int:
    from fhirlake.bootstrap import open_catalog
    from lake.maintenance import maintain

    settings = _settings(args)
    report = maintain(
        open_catalog(settings),
        snapshot_retention_s=settings.lake.snapshot_retention_s if args.retention is None else args.retention,
        min_files=settings.lake.compact_min_files,
        target_rows=settings.lake.target_file_rows,
    )
    _print(
        {
            name: {
                "files_before": report.files_before[name],
                "files_after": report.files_after[name],
                "rows": report.rows[name],
                "expired_snapshots": report.expired_snapshots[name],
            }
            for name in report.files_before
            if report.files_before[name] or report.rows[name]
        }
    )
    return 0


def cmd_lake_hold(args: argparse.Namespace) -> int:
    from fhirlake.bootstrap import open_catalog
    from lake.snapshots import hold, holds, release

    if not args.list and not args.name:
        sys.stderr.write("fhirlake: lake hold needs --name (or --list)\n")
        return 2
    catalog = open_catalog(_settings(args))
    if args.list:
        _print({"holds": holds(catalog)})
    elif args.release:
        _print({"released": args.name, "tables": release(catalog, args.name)})
    else:
        _print({"held": args.name, "snapshots": hold(catalog, args.name)})
    return 0


def cmd_lake_info(args: argparse.Namespace) -> int:
    from fhirlake.bootstrap import open_catalog
    from lake.inspect import describe

    _print(describe(open_catalog(_settings(args))))
    return 0


def _print(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fhirlake", description="FHIR R4 ingestion service and Iceberg lake")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the FHIR gateway on the embedded default")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--demo", action="store_true", help="load the bundled Synthea demo patients")
    serve.add_argument("--workers", type=int, default=1, help="gateway processes (default 1)")
    serve.add_argument(
        "--insecure-http",
        action="store_true",
        help="DEVELOPMENT ONLY: plain HTTP instead of TLS (logged loudly); never with real data",
    )
    _add_data_dir(serve)
    serve.set_defaults(func=cmd_serve)

    lake = sub.add_parser("lake", help="inspect and maintain the Iceberg tables")
    lake_sub = lake.add_subparsers(dest="lake_command", required=True)
    maintain = lake_sub.add_parser("maintain", help="compact small files and expire old snapshots")
    maintain.add_argument("--retention", type=float, help="snapshot retention in seconds (default: setting)")
    _add_data_dir(maintain)
    maintain.set_defaults(func=cmd_lake_maintain)
    held = lake_sub.add_parser("hold", help="legal hold: tag the current snapshots so that expiry keeps them")
    held.add_argument("--name", help="name of the hold (letters, digits, . _ -)")
    held.add_argument("--release", action="store_true", help="remove the hold of that name")
    held.add_argument("--list", action="store_true", help="list the holds")
    _add_data_dir(held)
    held.set_defaults(func=cmd_lake_hold)
    info = lake_sub.add_parser("info", help="rows, files and snapshots per table")
    _add_data_dir(info)
    info.set_defaults(func=cmd_lake_info)

    keys_cli.register(sub, _add_data_dir)
    certs_cli.register(sub, _add_data_dir)
    clients_cli.register(sub, _add_data_dir)
    audit_cli.register(sub, _add_data_dir)
    views_cli.register(sub, _add_data_dir)
    dr_cli.register(sub, _add_data_dir)
    ingest_cli.register(sub, _add_data_dir)
    writer_cli.register(sub, _add_data_dir)

    args = parser.parse_args(argv)
    args.settings_of, args.print = _settings, _print
    try:
        code = int(args.func(args))
    except FhirlakeError as exc:  # a clear, PHI-free message instead of a traceback
        sys.stderr.write(f"fhirlake: {exc.code}: {exc.message}\n")
        code = 2
    action = cli_audit.action_of(args)
    if action is not None and _settings(args).data_dir.exists():  # failures are recorded too
        try:
            cli_audit.record_command(_settings(args), args, action, code)
        except FhirlakeError as exc:
            sys.stderr.write(f"fhirlake: the command ran but its audit record failed: {exc.code}\n")
            return 3
    return code


if __name__ == "__main__":
    raise SystemExit(main())
