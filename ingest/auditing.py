"""What an HTTP request becomes in the audit trail: one FHIR AuditEvent-shaped record, no PHI.

The gateway hands over facts (method, route template, status, peer address,
query string, the caller's access context); this module maps them to an
event — who (client, role, fhirUser, certificate subject, address), what
(action, resources disclosed, patients by pseudonymous key, the sensitivity codes
of what was disclosed and how many), how it ended,
why (purpose of use) — and submits it to the trail, which makes it durable.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode

from audit.events import AuditAction, audit_event, outcome_of
from audit.reports import action, anomalies, load_events, recorded, who
from ingest.access import Access
from ingest.errors import InvalidInputError, Issue
from security.pseudonym import Pseudonymizer

# Query values kept as sent: paging and formatting, and logical ids (opaque, never identifiers).
_KEEP = frozenset(
    {
        "_count",
        "_offset",
        "_format",
        "_summary",
        "_sort",
        "_elements",
        "_id",
        "patient",
        "subject",
        "_pretty",
        "_include",
        "_revinclude",
        "_type",
        "_since",
        "_asOf",
    }
)
_ACTIONS = {
    ("GET", "/fhir/{rtype}"): AuditAction.SEARCH,
    ("GET", "/fhir/{rtype}/{rid}"): AuditAction.READ,
    ("GET", "/fhir/{rtype}/{rid}/_history/{vid}"): AuditAction.VREAD,
    ("GET", "/fhir/{rtype}/{rid}/_history"): AuditAction.HISTORY,
    ("GET", "/fhir/{rtype}/_history"): AuditAction.HISTORY,
    ("GET", "/fhir/Patient/{rid}/$everything"): AuditAction.EVERYTHING,
    ("POST", "/fhir/ViewDefinition/$run"): AuditAction.EXPORT,
    ("GET", "/fhir/$export"): AuditAction.EXPORT,
    ("GET", "/fhir/Patient/$export"): AuditAction.EXPORT,
    ("GET", "/fhir/Group/{gid}/$export"): AuditAction.EXPORT,
    ("GET", "/fhir/$export-status/{job}"): AuditAction.EXPORT,
    ("GET", "/fhir/$export-file/{job}/{name}"): AuditAction.EXPORT,
    ("DELETE", "/fhir/$export-status/{job}"): AuditAction.EXPORT,
    ("POST", "/fhir"): AuditAction.TRANSACTION,
    ("POST", "/fhir/"): AuditAction.TRANSACTION,
    ("POST", "/fhir/{rtype}"): AuditAction.CREATE,
    ("PUT", "/fhir/{rtype}"): AuditAction.UPDATE,
    ("PUT", "/fhir/{rtype}/{rid}"): AuditAction.UPDATE,
    ("DELETE", "/fhir/{rtype}"): AuditAction.DELETE,
    ("DELETE", "/fhir/{rtype}/{rid}"): AuditAction.DELETE,
    ("POST", "/fhir/Patient/{rid}/$purge"): AuditAction.PURGE,
    ("POST", "/auth/token"): AuditAction.TOKEN,
    ("POST", "/auth/break-glass"): AuditAction.BREAK_GLASS,
    ("GET", "/fhir/AuditEvent"): AuditAction.AUDIT_READ,
    ("GET", "/admin/audit/data"): AuditAction.AUDIT_READ,
    ("POST", "/ingest/{adapter}"): AuditAction.TRANSACTION,
    ("POST", "/fhir/$import"): AuditAction.TRANSACTION,
    ("POST", "/fhir/Patient/$match"): AuditAction.SEARCH,
}


class Trail(Protocol):
    def submit(self, event: Mapping[str, Any]) -> Future[int]: ...

    def close(self) -> None: ...


class NullTrail:
    """No audit at all: only for the benchmark's audit-off comparison run."""

    def submit(self, event: Mapping[str, Any]) -> Future[int]:
        done: Future[int] = Future()
        done.set_result(0)
        return done

    def close(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class RequestFacts:
    method: str
    route: str  # the route template, never the raw path (it may carry ids of other kinds)
    status: int
    address: str | None
    query: str
    access: Access | None


def redact_query(query: str) -> str:
    """The query with every value that could be PHI replaced (names, birth dates, identifiers…)."""
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(k, v if k.split(":")[0] in _KEEP else "redacted") for k, v in pairs])


class AuditRecorder:
    def __init__(self, trail: Trail, tenant: str) -> None:
        self._trail = trail
        self._tenant = tenant

    def close(self) -> None:
        self._trail.close()

    @property
    def healthy(self) -> bool:
        """False while the trail's last append failed (requests then answer 503)."""
        return bool(getattr(self._trail, "healthy", True))

    def submit(self, facts: RequestFacts) -> Future[int]:
        """Queue the request's record; the future resolves once it is durable (raises AuditError otherwise)."""
        return self._trail.submit(self.event(facts))

    def event(self, facts: RequestFacts) -> dict[str, Any]:
        """The AuditEvent of one request: denials and failed logins get their own action tags."""
        access = facts.access
        principal = access.principal if access is not None else None
        action = _ACTIONS.get((facts.method, facts.route), AuditAction.ADMIN)
        if facts.status == 401:
            action = AuditAction.LOGIN_FAILED
        elif facts.status == 403 or (access is not None and access.denied and facts.status >= 400):
            action = AuditAction.DENIED
        target = f"{facts.method} {facts.route}"
        query = f"{target}?{redact_query(facts.query)}" if facts.query else target
        return audit_event(
            action,
            outcome=outcome_of(facts.status),
            outcome_code=str(facts.status),
            client_id=principal.client_id if principal else None,
            user=principal.fhir_user if principal else None,
            role=principal.role.value if principal else None,
            address=_ip(facts.address),
            cert_subject=principal.cert_subject if principal else None,
            site=self._tenant,
            patient_keys=sorted(access.patient_keys) if access is not None else (),
            resources=access.references if access is not None else (),
            query=query,
            purpose_of_use=("BTG",) if access is not None and access.flagged else (),
            security_labels=access.labels if access is not None else None,
            sensitive_count=access.sensitive_count if access is not None else 0,
        )


def _ip(address: str | None) -> str | None:
    """The peer's IP address; other peer names (in-process test clients, unix sockets) are not recorded."""
    try:
        return None if address is None else str(ipaddress.ip_address(address))
    except ValueError:
        return None


class AuditQueries:
    """``GET /fhir/AuditEvent`` for compliance officers: the trail, filtered, never decrypted."""

    def __init__(self, audit_dir: Path, pseudo: Pseudonymizer, max_count: int) -> None:
        self._dir = audit_dir
        self._pseudo = pseudo
        self._max = max_count

    def search(self, access: Access, params: list[tuple[str, str]]) -> dict[str, Any]:
        """A searchset of AuditEvents by ``patient`` (id), ``agent`` and ``date`` (``ge``/``lt`` prefixes).

        Raises ForbiddenError unless the caller may read the audit trail; InvalidInputError for a bad date.
        """
        access.require_kind("audit", "read")
        patient_key, agent, start, end, count = None, None, None, None, 100
        for name, value in params:
            if name == "patient":
                patient_key = self._pseudo.patient_key(value.removeprefix("Patient/"))
            elif name == "agent":
                agent = value
            elif name == "date":
                prefix, moment = (value[:2], value[2:]) if value[:2] in ("ge", "gt", "lt", "le") else ("eq", value)
                when = _instant(moment)
                if prefix in ("ge", "gt", "eq"):
                    start = when
                if prefix in ("lt", "le"):
                    end = when
            elif name == "_count" and value.isdigit():
                count = max(1, min(int(value), self._max))
        events = load_events(self._dir, start=start, end=end, patient_key=patient_key, agent=agent)
        page = list(itertools.islice(events, count))
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(page),
            "entry": [{"resource": event, "search": {"mode": "match"}} for event in page],
        }

    def summary(self, access: Access, params: list[tuple[str, str]]) -> dict[str, Any]:
        """Counts for the audit page: records per day, top agents, denials per day (``agent``, ``from``, ``to``),
        and the anomaly rows of the same records (``audit.reports.anomalies``, sensitive access included).

        Raises ForbiddenError unless the caller may read the audit trail; InvalidInputError for a bad date.
        """
        access.require_kind("audit", "read")
        args = dict(params)
        start = _instant(args["from"]) if args.get("from") else None
        end = _instant(args["to"]) + timedelta(days=1) if args.get("to") else None
        per_day: Counter[str] = Counter()
        agents: Counter[str] = Counter()
        denials: Counter[str] = Counter()
        total = 0
        agent = args.get("agent") or None
        for event in load_events(self._dir, start=start, end=end, agent=agent):
            total += 1
            day = recorded(event).date().isoformat()
            per_day[day] += 1
            agents[who(event) or "anonymous"] += 1
            if action(event) in ("denied", "login-failed"):
                denials[day] += 1
        return {
            "total": total,
            "over_time": sorted(per_day.items()),
            "top_agents": agents.most_common(10),
            "denials": sorted(denials.items()),
            "anomalies": anomalies(load_events(self._dir, start=start, end=end, agent=agent)).rows,
        }


def _instant(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(
            "invalid date", [Issue("invalid", "date must be an ISO 8601 date or dateTime", ("date",))]
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
