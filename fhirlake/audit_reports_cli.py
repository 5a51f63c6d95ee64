"""``fhirlake audit report …``: compliance reports over ``<data-dir>/audit`` (disclosures, activity, …).

Reports name patients only by pseudonymous key. ``--patient ID`` derives that key from the
tenant's blind-index key (the key store is opened for that alone); ``--patient-key`` needs nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from audit.reports import (
    AuditReportError,
    Report,
    activity,
    anomalies,
    break_glass,
    denied,
    disclosures,
    flagged_events,
    load_events,
    to_csv,
    to_fhir_bundle,
    to_html,
)

KINDS = ("disclosures", "activity", "break-glass", "denied", "anomalies")
FORMATS = ("csv", "json", "fhir", "html")
_AUDIT_DIR = "audit"  # under the data directory, as in fhirlake.audit_cli


def parse_time(text: str, *, end: bool = False) -> datetime:
    """An ISO 8601 date or datetime as an aware UTC datetime; naive input is UTC.

    A bare date is its midnight, or with ``end`` the next midnight, so ``--to 2024-03-31``
    includes that whole day. Raises argparse.ArgumentTypeError if ``text`` is not ISO 8601.
    """
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime.combine(day + timedelta(days=1 if end else 0), time(), UTC)
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected an ISO 8601 date or datetime, e.g. 2024-03-31T18:00:00Z") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _end_time(text: str) -> datetime:
    return parse_time(text, end=True)


def register_reports(audit_sub: Any, add_data_dir: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``report`` to the ``fhirlake audit`` subcommands."""
    report = audit_sub.add_parser(
        "report",
        help="compliance reports: accounting of disclosures, activity, break-glass, denials, anomalies",
        description="Time bounds are UTC; a bare --to date includes that day. Patients appear by pseudonymous key.",
    )
    report.add_argument("kind", choices=KINDS)
    patient = report.add_mutually_exclusive_group()
    patient.add_argument("--patient-key", help="the patient's pseudonymous key (disclosures)")
    patient.add_argument("--patient", help="the patient's logical id; its key is derived with the tenant's keys")
    report.add_argument("--agent", help="client id or fhirUser (activity; narrows every other report)")
    report.add_argument("--from", dest="start", type=parse_time, help="ISO 8601 date or datetime, inclusive")
    report.add_argument("--to", dest="end", type=_end_time, help="ISO 8601 date (inclusive) or datetime (exclusive)")
    report.add_argument("--format", choices=FORMATS, default="json", help="output format (default json)")
    add_data_dir(report)
    report.set_defaults(func=cmd_report)


def _patient_key(args: argparse.Namespace) -> str | None:
    if args.patient is None:
        return args.patient_key  # type: ignore[no-any-return]
    from fhirlake.bootstrap import open_keys
    from security.keys import INDEX_SUBJECT
    from security.pseudonym import Pseudonymizer

    settings = args.settings_of(args)
    keys = open_keys(settings)
    try:
        return Pseudonymizer(keys.secret(INDEX_SUBJECT), settings.tenant).patient_key(args.patient)
    finally:
        keys.store.close()


def cmd_report(args: argparse.Namespace) -> int:
    """Print the report. Raises AuditReportError if the kind needs a patient or an agent it was not given."""
    if args.kind == "disclosures" and args.patient is None and args.patient_key is None:
        raise AuditReportError("the disclosures report needs --patient or --patient-key")
    if args.kind == "activity" and not args.agent:
        raise AuditReportError("the activity report needs --agent")
    patient_key = _patient_key(args)
    audit_dir = args.settings_of(args).data_dir / _AUDIT_DIR

    def events() -> Iterator[dict[str, Any]]:
        return load_events(audit_dir, start=args.start, end=args.end, patient_key=patient_key, agent=args.agent)

    report = _build(args.kind, events(), patient_key, args.agent)
    if args.format == "json":
        args.print(report.rows)
    elif args.format == "fhir":
        found = flagged_events(events(), report.rows) if args.kind == "anomalies" else report.events
        args.print(to_fhir_bundle(found))
    elif args.format == "csv":
        sys.stdout.write(to_csv(report.rows))
    else:
        sys.stdout.write(to_html(report.title, report.rows))
    return 0


def _build(kind: str, events: Iterator[dict[str, Any]], patient_key: str | None, agent: str | None) -> Report:
    if kind == "disclosures":
        return disclosures(events, patient_key or "")
    if kind == "activity":
        return activity(events, agent or "")
    if kind == "break-glass":
        return break_glass(events)
    if kind == "denied":
        return denied(events)
    return anomalies(events)
