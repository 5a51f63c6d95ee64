"""Operator commands leave audit records too: key operations, registrations, maintenance, audit reads.

Each state-touching ``fhirlake`` command is recorded once, after it ran, with
its outcome, in a trail of its own (``audit/trail-N`` — never one a running
gateway holds). Read-only inspection (``lake info``, ``clients list``) and
``serve`` (which records its own requests) are not command events.
"""

from __future__ import annotations

import argparse
import getpass
import re

from audit.events import AuditAction, Outcome, audit_event
from fhirlake.settings import Settings

ACTIONS: dict[tuple[str, str | None], AuditAction] = {
    ("keys", "rotate"): AuditAction.KEY_ROTATE,
    ("keys", "shred"): AuditAction.KEY_SHRED,
    ("keys", "backup"): AuditAction.ADMIN,
    ("keys", "status"): AuditAction.ADMIN,
    ("certs", "init"): AuditAction.ADMIN,
    ("certs", "issue-client"): AuditAction.ADMIN,
    ("clients", "add"): AuditAction.ADMIN,
    ("lake", "maintain"): AuditAction.ADMIN,
    ("lake", "hold"): AuditAction.ADMIN,
    ("audit", "verify"): AuditAction.AUDIT_READ,
    ("audit", "report"): AuditAction.AUDIT_READ,
    ("views", "run"): AuditAction.EXPORT,  # an extract of clinical data to a file
    ("dr", "replicate"): AuditAction.DR_REPLICATE,
    ("dr", "failover"): AuditAction.DR_FAILOVER,
    ("dr", "failback"): AuditAction.DR_FAILBACK,
    ("dr", "drill"): AuditAction.DR_DRILL,
    ("dr", "verify"): AuditAction.DR,
    ("ingest", "replay"): AuditAction.ADMIN,
    ("ingest", "dead-letters"): AuditAction.ADMIN,
    ("ingest", "import"): AuditAction.ADMIN,
}
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def action_of(args: argparse.Namespace) -> AuditAction | None:
    return ACTIONS.get((args.command, getattr(args, f"{args.command}_command", None)))


def record_command(settings: Settings, args: argparse.Namespace, action: AuditAction, code: int) -> None:
    """Write the command's audit record (raises AuditError when it cannot be made durable)."""
    patient = getattr(args, "patient", None) if action is AuditAction.KEY_SHRED else None
    query = f"fhirlake {args.command} {getattr(args, f'{args.command}_command', '')}".strip()
    record_event(settings, action, code, query, patient=patient)


def record_event(settings: Settings, action: AuditAction, code: int, query: str, *, patient: str | None = None) -> None:
    """Write one operator event to the active region's trail (also used for each step of a DR drill).

    Raises AuditError when it cannot be made durable.
    """
    from fhirlake.bootstrap import Paths, open_keys, open_trail, region_root
    from security.keys import INDEX_SUBJECT
    from security.pseudonym import Pseudonymizer

    keys = open_keys(settings)
    try:
        patient_keys: tuple[str, ...] = ()
        if patient:
            pseudo = Pseudonymizer(keys.secret(INDEX_SUBJECT), settings.tenant)
            patient_keys = (pseudo.patient_key(patient),)
        trail = open_trail(settings, Paths(region_root(settings)), keys)
        try:
            trail.submit(
                audit_event(
                    action,
                    outcome=Outcome.SUCCESS if code == 0 else Outcome.MINOR_FAILURE,
                    outcome_code=f"exit-{code}",
                    client_id=f"cli:{_SAFE.sub('_', getpass.getuser())}",
                    role="operator",
                    site=settings.tenant,
                    patient_keys=patient_keys,
                    query=query,
                )
            ).result(timeout=30)
        finally:
            trail.close()
    finally:
        keys.store.close()
