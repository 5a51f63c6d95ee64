"""``fhirlake ingest …``: replay the raw zone, list and retry dead letters, bulk-import NDJSON files."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

T = TypeVar("T")


def register(sub: Any, add_data_dir: Callable[[argparse.ArgumentParser], None]) -> None:
    ingest = sub.add_parser("ingest", help="EMR ingestion: raw-zone replay, dead letters, bulk import")
    ingest_sub = ingest.add_subparsers(dest="ingest_command", required=True)
    replay = ingest_sub.add_parser("replay", help="re-run an adapter's current mapping over its kept raw payloads")
    replay.add_argument("--adapter", required=True)
    replay.add_argument("--since", required=True, help="ISO 8601 time (UTC when no offset is given)")
    add_data_dir(replay)
    replay.set_defaults(func=cmd_replay)

    letters = ingest_sub.add_parser("dead-letters", help="payloads that could not be stored")
    letters_sub = letters.add_subparsers(dest="letters_command", required=True)
    listing = letters_sub.add_parser("list", help="list dead letters and their reasons")
    listing.add_argument("--status", default="open", choices=("open", "resolved", "all"))
    add_data_dir(listing)
    listing.set_defaults(func=cmd_letters_list)
    retry = letters_sub.add_parser("retry", help="process dead letters again with the current mapping")
    retry.add_argument("ids", nargs="*", type=int, help="dead letter ids (default: every open one)")
    add_data_dir(retry)
    retry.set_defaults(func=cmd_letters_retry)

    bulk = ingest_sub.add_parser("import", help="bulk-import NDJSON files (streaming)")
    bulk.add_argument("files", nargs="+", type=Path)
    bulk.add_argument(
        "--workers", type=int, default=0, help="validation processes (default 0: in-process, bounded memory)"
    )
    add_data_dir(bulk)
    bulk.set_defaults(func=cmd_import)


def _since(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _with_container(args: argparse.Namespace, work: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    # Long runs keep memory flat: Arrow's own pool would hold on to every peak of the lake writer.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    from fhirlake.bootstrap import build

    settings = args.settings_of(args)
    workers = getattr(args, "workers", None)
    if workers is not None:
        settings.ingest.validation_workers = workers
    container = build(settings)
    container.start()

    async def bounded() -> T:
        # A few worker threads, not anyio's 40: each would keep its own SQLite reader cache and malloc arena.
        anyio.to_thread.current_default_thread_limiter().total_tokens = 4
        return await work(container)

    try:
        return asyncio.run(bounded())
    finally:
        container.lake_writer.flush()
        container.close()


def cmd_replay(args: argparse.Namespace) -> int:
    since = _since(args.since)
    report = _with_container(args, lambda c: c.emr.replay(args.adapter, since))
    args.print(report.as_json())
    return 0 if report.failed == 0 else 1


def cmd_letters_list(args: argparse.Namespace) -> int:
    from fhirlake.bootstrap import Paths
    from ingest.raw_zone import RawZone
    from security.sealing import PlaintextSealer

    path = Paths(args.settings_of(args).data_dir.resolve()).root / "ingest" / "raw.db"
    if not path.exists():
        args.print({"deadLetters": []})
        return 0
    zone = RawZone(path, PlaintextSealer())  # listing never opens a payload
    try:
        letters = zone.letters(None if args.status == "all" else args.status)
    finally:
        zone.close()
    args.print({"deadLetters": [letter.as_json() for letter in letters]})
    return 0


def cmd_letters_retry(args: argparse.Namespace) -> int:
    async def work(container: Any) -> list[dict[str, object]]:
        ids = args.ids or [letter.id for letter in container.emr.raw.letters("open")]
        out = []
        for letter_id in ids:
            result = await container.emr.retry(letter_id, None)
            entry: dict[str, object] = {"id": letter_id, "stored": result.error is None}
            if result.error is not None:
                entry["code"] = result.error.code
            out.append(entry)
        return out

    results = _with_container(args, work)
    args.print({"retried": results})
    return 0 if all(r["stored"] for r in results) else 1


def cmd_import(args: argparse.Namespace) -> int:
    paths = [p.resolve() for p in args.files]
    report = _with_container(args, lambda c: c.emr.bulk.run(paths, None))
    args.print(report.as_json())
    return 0 if report.failed == 0 else 1
