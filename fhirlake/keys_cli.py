"""``fhirlake keys …``: status, rotation, crypto-shredding and key store copies."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fhirlake.settings import Settings

Printer = Callable[[Any], None]
SettingsOf = Callable[[argparse.Namespace], Settings]


def register(sub: Any, add_data_dir: Callable[[argparse.ArgumentParser], None]) -> None:
    keys = sub.add_parser("keys", help="key management: status, rotate, shred, backup")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    status = keys_sub.add_parser("status", help="KMS provider, KEK versions in use, key store copies")
    status.set_defaults(func=cmd_status)
    rotate = keys_sub.add_parser("rotate", help="re-wrap every data key under a new KEK version (online)")
    rotate.set_defaults(func=cmd_rotate)
    shred = keys_sub.add_parser("shred", help="erase a patient by destroying the patient's data key")
    shred.add_argument("--patient", required=True, help="logical id of the Patient resource")
    shred.set_defaults(func=cmd_shred)
    backup = keys_sub.add_parser("backup", help="copy the key store; shredding will reach the copy too")
    backup.add_argument("--to", required=True, type=Path, help="file to write the copy to")
    backup.set_defaults(func=cmd_backup)
    for parser in (status, rotate, shred, backup):
        add_data_dir(parser)


def _keys(args: argparse.Namespace) -> Any:
    from fhirlake.bootstrap import open_keys

    return open_keys(args.settings_of(args))


def cmd_status(args: argparse.Namespace) -> int:
    keys = _keys(args)
    try:
        args.print(
            {
                "tenant": keys.tenant,
                "provider": keys.provider.name,
                "current_kek": keys.provider.current_kek(keys.tenant),
                "data_keys_by_kek": keys.store.count_by_kek(),
                "copies": list(keys.store.copies()),
            }
        )
    finally:
        keys.store.close()
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    keys = _keys(args)
    try:
        report = keys.rotate()
    finally:
        keys.store.close()
    args.print({"kek": report.kek_id, "rewrapped": report.rewrapped, "remaining_under_old_keks": report.remaining})
    return 0 if report.remaining == 0 else 1


def cmd_shred(args: argparse.Namespace) -> int:
    from fhirlake.bootstrap import Paths, region_root
    from ingest.erasure import PatientErasure
    from ingest.journal import Journal
    from security.keys import INDEX_SUBJECT
    from security.pseudonym import Pseudonymizer

    settings = args.settings_of(args)
    keys = _keys(args)
    journal = Journal(Paths(region_root(settings)).journal)
    try:
        pseudo = Pseudonymizer(keys.secret(INDEX_SUBJECT), settings.tenant)
        report = PatientErasure(journal, keys, pseudo).erase(args.patient)
    finally:
        journal.close()
        keys.store.close()
    args.print(
        {
            "resources_erased": report.resources,
            "keys_destroyed": report.keys_destroyed,
            "copies_reached": report.copies_reached,
            "copies_missing": report.copies_missing,
        }
    )
    return 0 if not report.copies_missing else 1


def cmd_backup(args: argparse.Namespace) -> int:
    keys = _keys(args)
    try:
        keys.store.backup_to(args.to)
    finally:
        keys.store.close()
    args.print({"copy": str(args.to.resolve())})
    return 0
