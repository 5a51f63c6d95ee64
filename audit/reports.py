"""Compliance reports over the audit trail: disclosures, activity, break-glass, denials, anomalies.

Reports read the stored AuditEvents (``trail-*/segment-*.log``) and never decrypt anything:
patients appear only by their pseudonymous key, resources by ``Type/id``. Each report gives
flat rows (for CSV, JSON, HTML) and the events behind them (for a FHIR Bundle). Times are UTC;
a range is ``start <= recorded < end`` and either bound may be left open.
"""

from __future__ import annotations

import csv
import html
import io
import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from audit.errors import AuditError, AuditIntegrityError
from audit.events import SENSITIVE_DETAIL, AuditAction, Outcome
from audit.segments import segment_paths

Row = dict[str, str | int]
Event = dict[str, Any]

ACTION_SYSTEM = "urn:fhirlake:audit-action"
# Successful interactions that hand patient data to the caller (HIPAA 164.528 accounting).
_A = AuditAction
DISCLOSING = frozenset({_A.READ, _A.VREAD, _A.HISTORY, _A.SEARCH, _A.EVERYTHING, _A.TRANSACTION, _A.BATCH, _A.EXPORT})
DENIALS = frozenset({AuditAction.DENIED, AuditAction.LOGIN_FAILED})
BREAK_GLASS_PURPOSE = "BTG"


class AuditReportError(AuditError):
    """A report was asked for with arguments it cannot use (no patient, no agent, unknown kind)."""

    code = "audit-report"


@dataclass(frozen=True, slots=True)
class Report:
    title: str
    rows: list[Row]
    events: list[Event] = field(default_factory=list)


# -- reading ----------------------------------------------------------------------------------------


def _trail_dirs(audit_dir: Path) -> list[Path]:
    trails = sorted(p for p in audit_dir.glob("trail-*") if p.is_dir())
    return trails if trails else [audit_dir]


def _read_segment(path: Path) -> Iterator[Event]:
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                return  # a torn last line: never acknowledged, cut when a writer reopens the trail
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise AuditIntegrityError(
                    "record", f"{path.parent.name}/{path.name} line {number} is not JSON"
                ) from None
            if isinstance(record, dict) and isinstance(record.get("event"), dict):
                yield record["event"]


def load_events(
    audit_dir: Path,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    patient_key: str | None = None,
    agent: str | None = None,
) -> Iterator[Event]:
    """Stream the AuditEvents of every trail under ``audit_dir`` (or of ``audit_dir`` itself), in file order.

    Filters: ``start <= recorded < end``, a patient key among the entities, an agent (client id or
    fhirUser). Checkpoints are skipped. The chain is not verified here (``fhirlake audit verify``).
    Raises AuditIntegrityError if a complete line is not JSON, OSError if a segment cannot be read.
    """
    for directory in _trail_dirs(Path(audit_dir)):
        if not directory.is_dir():
            continue
        for _, path in segment_paths(directory):
            for event in _read_segment(path):
                if _matches(event, start, end, patient_key, agent):
                    yield event


def _matches(
    event: Event, start: datetime | None, end: datetime | None, patient_key: str | None, agent: str | None
) -> bool:
    if not in_range(event, start, end):
        return False
    if patient_key is not None and patient_key not in patient_keys(event):
        return False
    return agent is None or agent in (client_id(event), fhir_user(event))


# -- reading one event ----------------------------------------------------------------------------


def recorded(event: Event) -> datetime:
    """When the event was recorded (UTC)."""
    return datetime.fromisoformat(event["recorded"]).astimezone(UTC)


def in_range(event: Event, start: datetime | None, end: datetime | None) -> bool:
    when = recorded(event)
    return (start is None or when >= start) and (end is None or when < end)


def action(event: Event) -> str:
    return next((c["code"] for c in event.get("subtype", []) if c.get("system") == ACTION_SYSTEM), "")


def client_id(event: Event) -> str:
    for agent in event.get("agent", []):
        identifier = agent.get("who", {}).get("identifier", {})
        if identifier.get("system") == "urn:fhirlake:client-id":
            return str(identifier.get("value", ""))
    return ""


def _requestor(event: Event) -> Event:
    return next((a for a in event.get("agent", []) if a.get("requestor")), {})


def fhir_user(event: Event) -> str:
    person: Event = next(
        (a for a in event.get("agent", []) if "IRCP" in _codes(a.get("type", {}).get("coding", []))), {}
    )
    found = person.get("who", {})
    return str(found.get("reference") or found.get("identifier", {}).get("value", ""))


def _codes(codings: Iterable[dict[str, Any]]) -> list[str]:
    return [str(c.get("code", "")) for c in codings]


def role(event: Event) -> str:
    return " ".join(c for r in _requestor(event).get("role", []) for c in _codes(r.get("coding", [])))


def purposes(event: Event) -> list[str]:
    return [c for p in event.get("purposeOfEvent", []) for c in _codes(p.get("coding", []))]


def patient_keys(event: Event) -> list[str]:
    return [
        str(e["what"]["identifier"]["value"])
        for e in event.get("entity", [])
        if e.get("what", {}).get("identifier", {}).get("system") == "urn:fhirlake:patient-key"
    ]


def resources(event: Event) -> list[str]:
    return [str(e["what"]["reference"]) for e in event.get("entity", []) if "reference" in e.get("what", {})]


def sensitivity(event: Event) -> tuple[int, Counter[str]]:
    """How many sensitive records the event disclosed, and per sensitivity code how many carried it."""
    codes: Counter[str] = Counter()
    count = 0
    for entity in event.get("entity", []):
        for detail in entity.get("detail", []):
            kind, value = str(detail.get("type", "")), str(detail.get("valueString", "0"))
            if not value.isdigit():
                continue
            if kind == SENSITIVE_DETAIL:
                count += int(value)
            elif kind.startswith(SENSITIVE_DETAIL + ":"):
                codes[kind.removeprefix(SENSITIVE_DETAIL + ":")] += int(value)
    return count, codes


def _sensitive_disclosure(event: Event) -> bool:
    return event.get("outcome") == Outcome.SUCCESS and action(event) in DISCLOSING and sensitivity(event)[0] > 0


def who(event: Event) -> str:
    """The person if there is one, else the client: whose behaviour the anomaly rules judge."""
    return fhir_user(event) or client_id(event) or "-"


def _address(event: Event) -> str:
    return next((str(a["network"]["address"]) for a in event.get("agent", []) if "network" in a), "")


def row_of(event: Event) -> Row:
    """The flat row of one event: when, what, how it ended, who, which patients and resources, why."""
    return {
        "recorded": str(event.get("recorded", "")),
        "action": action(event),
        "outcome": str(event.get("outcome", "")),
        "status": str(event.get("outcomeDesc", "")),
        "client_id": client_id(event),
        "role": role(event),
        "fhir_user": fhir_user(event),
        "address": _address(event),
        "patient_keys": " ".join(patient_keys(event)),
        "resources": " ".join(resources(event)),
        "purpose_of_use": " ".join(purposes(event)),
    }


def _select(title: str, events: Iterable[Event], keep: Any, start: datetime | None, end: datetime | None) -> Report:
    chosen = sorted((e for e in events if in_range(e, start, end) and keep(e)), key=recorded)
    return Report(title, [row_of(e) for e in chosen], chosen)


# -- reports ----------------------------------------------------------------------------------------


def disclosures(
    events: Iterable[Event], patient_key: str, start: datetime | None = None, end: datetime | None = None
) -> Report:
    """Accounting of disclosures: every successful read, vread, history, search, transaction, batch or
    export that named the patient ``patient_key`` — when, to whom (client, role, fhirUser), what, why."""

    def keep(e: Event) -> bool:
        return e.get("outcome") == Outcome.SUCCESS and action(e) in DISCLOSING and patient_key in patient_keys(e)

    return _select(f"Accounting of disclosures for patient key {patient_key}", events, keep, start, end)


def activity(events: Iterable[Event], agent: str, start: datetime | None = None, end: datetime | None = None) -> Report:
    """Everything one agent did, whatever the outcome; ``agent`` is a client id or a fhirUser."""
    return _select(f"Activity of {agent}", events, lambda e: agent in (client_id(e), fhir_user(e)), start, end)


def break_glass(events: Iterable[Event], start: datetime | None = None, end: datetime | None = None) -> Report:
    """Break-glass requests (granted or refused) and every access flagged with purpose of use BTG."""

    def keep(e: Event) -> bool:
        return action(e) == AuditAction.BREAK_GLASS or BREAK_GLASS_PURPOSE in purposes(e)

    return _select("Break-glass grants and emergency accesses", events, keep, start, end)


def denied(events: Iterable[Event], start: datetime | None = None, end: datetime | None = None) -> Report:
    """Refused requests: access denials and failed logins (outcome not success)."""

    def keep(e: Event) -> bool:
        return action(e) in DENIALS and e.get("outcome") != Outcome.SUCCESS

    return _select("Denied requests and failed logins", events, keep, start, end)


def _after_hours(hour: int, window: tuple[int, int]) -> bool:
    begin, finish = window
    return (hour >= begin or hour < finish) if begin > finish else begin <= hour < finish


def anomalies(
    events: Iterable[Event],
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    volume_factor: float = 5.0,
    after_hours: tuple[int, int] = (20, 7),
    distinct_patients: int = 50,
    baseline_days: int = 3,
) -> Report:
    """Unusual behaviour, one row per rule, agent and UTC day (``kind``, ``agent``, ``day``, ``count``…).

    - ``volume``: a client's events on a day exceed ``volume_factor`` times the median of its own
      daily counts on its *other* active days; judged only with at least ``baseline_days`` such
      days (days without activity are not part of the baseline). The agent is the client id.
    - ``after-hours``: data accesses (events naming patients or resources) whose UTC hour lies in
      ``after_hours``: ``(20, 7)`` is 20:00-06:59, ``(0, 6)`` is 00:00-05:59. The agent is the
      fhirUser, else the client id.
    - ``distinct-patients``: an agent (fhirUser, else client id) naming more than
      ``distinct_patients`` distinct patient keys in one day.
    - ``sensitive-access``: an agent (fhirUser, else client id) that was handed records labelled
      sensitive (``security.labels``: confidentiality R/V, ActCode PSY, HIV, SUD…) on a day, by a
      successful read, search, history, $everything, transaction or export. ``count`` is the
      number of sensitive records disclosed, ``detail`` the codes with their counts and, when
      some of those requests used a break-glass grant, how many (``break-glass 1/3``).

    ``events`` is empty; :func:`flagged_events` gives the events behind the rows on a second pass.
    Raises AuditReportError if a threshold is out of range.
    """
    if volume_factor <= 0 or distinct_patients < 1 or baseline_days < 1 or not all(0 <= h < 24 for h in after_hours):
        raise AuditReportError("anomaly thresholds: factor > 0, patients >= 1, baseline days >= 1, hours 0-23")
    volume: Counter[tuple[str, str]] = Counter()
    late: Counter[tuple[str, str]] = Counter()
    seen: defaultdict[tuple[str, str], set[str]] = defaultdict(set)
    sensitive: defaultdict[tuple[str, str], _Sensitive] = defaultdict(_Sensitive)
    for event in events:
        if not in_range(event, start, end):
            continue
        when, person = recorded(event), who(event)
        day = when.date().isoformat()
        volume[(client_id(event) or person, day)] += 1
        if _after_hours(when.hour, after_hours) and (patient_keys(event) or resources(event)):
            late[(person, day)] += 1
        seen[(person, day)].update(patient_keys(event))
        if _sensitive_disclosure(event):
            sensitive[(person, day)].add(event)
    rows = _volume_rows(volume, volume_factor, baseline_days)
    rows += [
        _anomaly("after-hours", key, n, f"UTC {after_hours[0]:02d}:00-{after_hours[1]:02d}:00")
        for key, n in late.items()
    ]
    rows += [
        _anomaly("distinct-patients", key, len(keys), f"more than {distinct_patients}")
        for key, keys in seen.items()
        if len(keys) > distinct_patients
    ]
    rows += [_anomaly("sensitive-access", key, found.records, found.detail()) for key, found in sensitive.items()]
    return Report("Anomalies", sorted(rows, key=lambda r: (str(r["day"]), str(r["kind"]), str(r["agent"]))))


@dataclass(slots=True)
class _Sensitive:
    """One agent's day of sensitive disclosures: records, codes, requests and how many were break-glass."""

    records: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    break_glass: int = 0

    def add(self, event: Event) -> None:
        count, codes = sensitivity(event)
        self.records += count
        self.codes.update(codes)
        self.requests += 1
        self.break_glass += BREAK_GLASS_PURPOSE in purposes(event)

    def detail(self) -> str:
        codes = " ".join(f"{code}={n}" for code, n in sorted(self.codes.items()))
        glass = f"; break-glass {self.break_glass}/{self.requests}" if self.break_glass else ""
        return f"codes {codes}{glass}"


def _anomaly(kind: str, key: tuple[str, str], count: int, detail: str, baseline: str = "") -> Row:
    return {"kind": kind, "agent": key[0], "day": key[1], "count": count, "baseline": baseline, "detail": detail}


def _volume_rows(volume: Counter[tuple[str, str]], factor: float, baseline_days: int) -> list[Row]:
    by_agent: defaultdict[str, dict[str, int]] = defaultdict(dict)
    for (agent, day), count in volume.items():
        by_agent[agent][day] = count
    rows: list[Row] = []
    for agent, days in by_agent.items():
        for day, count in days.items():
            others = [n for d, n in days.items() if d != day]
            if len(others) < baseline_days:
                continue
            median = statistics.median(others)
            if count > factor * median:
                rows.append(_anomaly("volume", (agent, day), count, f"more than {factor:g} x median", f"{median:g}"))
    return rows


def flagged_events(
    events: Iterable[Event], rows: Iterable[Row], *, after_hours: tuple[int, int] = (20, 7)
) -> Iterator[Event]:
    """The events behind anomaly ``rows`` (pass the same ``after_hours`` as to :func:`anomalies`)."""
    wanted: defaultdict[tuple[str, str], set[str]] = defaultdict(set)
    for row in rows:
        wanted[(str(row["agent"]), str(row["day"]))].add(str(row["kind"]))
    for event in events:
        when = recorded(event)
        day = when.date().isoformat()
        kinds = wanted.get((client_id(event) or who(event), day), set()) & {"volume"}
        kinds |= wanted.get((who(event), day), set()) - {"volume"}
        late = _after_hours(when.hour, after_hours) and bool(patient_keys(event) or resources(event))
        if (
            "volume" in kinds
            or ("distinct-patients" in kinds and patient_keys(event))
            or ("after-hours" in kinds and late)
            or ("sensitive-access" in kinds and _sensitive_disclosure(event))
        ):
            yield event


# -- formats ----------------------------------------------------------------------------------------

_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: str | int) -> str | int:
    # A spreadsheet would run a cell that starts like a formula; quote it so it stays text.
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA) else value


def _columns(rows: list[Row]) -> list[str]:
    return list(dict.fromkeys(name for row in rows for name in row))


def to_csv(rows: list[Row]) -> str:
    """RFC 4180 CSV with a header line (no header at all when there are no rows)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=_columns(rows), restval="")
    if rows:
        writer.writeheader()
    writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    return out.getvalue()


def to_json(rows: list[Row]) -> str:
    return json.dumps(rows, indent=2)


def to_fhir_bundle(events: Iterable[Event]) -> dict[str, Any]:
    """A FHIR R4 Bundle of type ``collection`` holding the AuditEvents as entries."""
    entries = [{"resource": event} for event in events]
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {"resourceType": "Bundle", "type": "collection", "timestamp": now, "total": len(entries), "entry": entries}


def to_html(title: str, rows: list[Row]) -> str:
    """A standalone HTML page (inline style, no scripts or external assets) with the rows as a table."""
    columns = _columns(rows)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(row.get(c, '')))}</td>" for c in columns) + "</tr>\n" for row in rows
    )
    text = html.escape(title)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>{text}</title><style>body{{font-family:sans-serif}}table{{border-collapse:collapse}}"
        "td,th{border:1px solid #999;padding:2px 6px;font-size:13px}th{background:#eee}</style></head>\n"
        f"<body><h1>{text}</h1><p>{len(rows)} rows</p>\n<table><thead><tr>{head}</tr></thead><tbody>\n{body}"
        "</tbody></table></body></html>\n"
    )
