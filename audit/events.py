"""FHIR R4 AuditEvent records in the spirit of IHE BALP, built from ids, keys and codes only.

The builder accepts no free text: every argument is an identifier, a pseudonymous
patient key, a ``Type/id`` reference, a code or a query the caller has already
stripped of PHI, and each is checked against a narrow pattern. Error messages name
the argument, never its value.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from audit.errors import AuditEventError

Coding = dict[str, str]

_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_REST = "http://hl7.org/fhir/restful-interaction"
_ACTION_SYSTEM = "urn:fhirlake:audit-action"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_PURPOSE = "http://terminology.hl7.org/CodeSystem/v3-ActReason"


class AuditAction(StrEnum):
    """What happened: the tag every audit event carries (``subtype`` in ``urn:fhirlake:audit-action``)."""

    READ = "read"
    VREAD = "vread"
    HISTORY = "history"
    SEARCH = "search"
    EVERYTHING = "everything"
    CREATE = "create"
    UPDATE = "update"
    PATCH = "patch"
    DELETE = "delete"
    TRANSACTION = "transaction"
    BATCH = "batch"
    EXPORT = "export"
    PURGE = "purge"
    ERASURE = "erasure"
    TOKEN = "token"  # noqa: S105 (an audit tag: a token was issued)
    LOGIN_FAILED = "login-failed"
    DENIED = "denied"
    BREAK_GLASS = "break-glass"
    ADMIN = "admin"
    CLI = "cli"
    KEY_ROTATE = "key-rotate"
    KEY_SHRED = "key-shred"
    DR = "dr"
    DR_REPLICATE = "dr-replicate"
    DR_FAILOVER = "dr-failover"
    DR_FAILBACK = "dr-failback"
    DR_DRILL = "dr-drill"
    AUDIT_READ = "audit-read"
    STARTUP = "startup"
    SHUTDOWN = "shutdown"


class Outcome(StrEnum):
    SUCCESS = "0"
    MINOR_FAILURE = "4"  # the request failed (4xx)
    SERIOUS_FAILURE = "8"  # the service failed (5xx)


def outcome_of(status: int) -> Outcome:
    """The AuditEvent outcome of an HTTP status code."""
    if status >= 500:
        return Outcome.SERIOUS_FAILURE
    return Outcome.MINOR_FAILURE if status >= 400 else Outcome.SUCCESS


def _dcm(code: str, display: str) -> Coding:
    return {"system": _DCM, "code": code, "display": display}


def _rest(code: str) -> Coding:
    return {"system": _REST, "code": code}


_REST_TYPE: Coding = {
    "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
    "code": "rest",
    "display": "RESTful Operation",
}
_SECURITY_ALERT = _dcm("110113", "Security Alert")
_USER_AUTH = _dcm("110114", "User Authentication")
_PATIENT_RECORD = _dcm("110110", "Patient Record")
_APPLICATION = _dcm("110100", "Application Activity")
_SECURITY_CONFIG = _dcm("110129", "Security Configuration")

# action -> (type, standard subtype or None, CRUDE action code)
_KINDS: dict[AuditAction, tuple[Coding, Coding | None, str]] = {
    AuditAction.READ: (_REST_TYPE, _rest("read"), "R"),
    AuditAction.VREAD: (_REST_TYPE, _rest("vread"), "R"),
    AuditAction.HISTORY: (_REST_TYPE, _rest("history"), "R"),
    AuditAction.SEARCH: (_REST_TYPE, _rest("search"), "E"),
    AuditAction.EVERYTHING: (_REST_TYPE, _rest("operation"), "E"),
    AuditAction.CREATE: (_REST_TYPE, _rest("create"), "C"),
    AuditAction.UPDATE: (_REST_TYPE, _rest("update"), "U"),
    AuditAction.PATCH: (_REST_TYPE, _rest("patch"), "U"),
    AuditAction.DELETE: (_REST_TYPE, _rest("delete"), "D"),
    AuditAction.TRANSACTION: (_REST_TYPE, _rest("transaction"), "E"),
    AuditAction.BATCH: (_REST_TYPE, _rest("batch"), "E"),
    AuditAction.EXPORT: (_dcm("110106", "Export"), None, "R"),
    AuditAction.PURGE: (_PATIENT_RECORD, None, "D"),
    AuditAction.ERASURE: (_PATIENT_RECORD, None, "D"),
    AuditAction.TOKEN: (_USER_AUTH, _dcm("110122", "Login"), "E"),
    AuditAction.LOGIN_FAILED: (_USER_AUTH, _dcm("110122", "Login"), "E"),
    AuditAction.DENIED: (_SECURITY_ALERT, _dcm("110132", "Use of Restricted Function"), "E"),
    AuditAction.BREAK_GLASS: (_SECURITY_ALERT, _dcm("110127", "Emergency Override Started"), "E"),
    AuditAction.ADMIN: (_SECURITY_ALERT, _SECURITY_CONFIG, "U"),
    AuditAction.CLI: (_APPLICATION, None, "E"),
    AuditAction.KEY_ROTATE: (_SECURITY_ALERT, _SECURITY_CONFIG, "U"),
    AuditAction.KEY_SHRED: (_SECURITY_ALERT, _SECURITY_CONFIG, "D"),
    AuditAction.DR: (_APPLICATION, None, "E"),
    AuditAction.DR_REPLICATE: (_APPLICATION, None, "E"),
    AuditAction.DR_FAILOVER: (_SECURITY_ALERT, _SECURITY_CONFIG, "U"),
    AuditAction.DR_FAILBACK: (_SECURITY_ALERT, _SECURITY_CONFIG, "U"),
    AuditAction.DR_DRILL: (_APPLICATION, None, "E"),
    AuditAction.AUDIT_READ: (_dcm("110101", "Audit Log Used"), None, "R"),
    AuditAction.STARTUP: (_APPLICATION, _dcm("110120", "Application Start"), "E"),
    AuditAction.SHUTDOWN: (_APPLICATION, _dcm("110121", "Application Stop"), "E"),
}

_TOKEN = re.compile(r"[A-Za-z0-9._:|-]{1,128}")
_REFERENCE = re.compile(r"[A-Z][A-Za-z]{1,63}/[A-Za-z0-9.-]{1,64}(/_history/[A-Za-z0-9.-]{1,64})?")
_PATIENT_KEY = re.compile(r"[0-9a-f]{32,128}")  # as security.pseudonym derives them
_PURPOSE_CODE = re.compile(r"[A-Z]{2,16}")
_PRINTABLE = re.compile(r"[\x20-\x7e]{1,4096}")
_LABEL_SYSTEM = re.compile(r"https?://[A-Za-z0-9./_-]{1,200}")
_LABEL_CODE = re.compile(r"[A-Za-z0-9_-]{1,32}")
SENSITIVE_DETAIL = "sensitive-records"  # entity.detail type: how many sensitive records the request disclosed


def _check(name: str, value: str, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise AuditEventError(f"audit event: {name} has an unexpected form")  # never echo the value
    return value


def _recorded(recorded: datetime | None) -> str:
    when = datetime.now(UTC) if recorded is None else recorded
    if when.tzinfo is None:
        raise AuditEventError("audit event: recorded must be timezone-aware")
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _agents(
    client_id: str | None,
    user: str | None,
    role: str | None,
    address: str | None,
    cert_subject: str | None,
    purposes: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    client: dict[str, Any] = {
        "type": {"coding": [_dcm("110153", "Source Role ID")]},
        "requestor": user is None,
    }
    if client_id is not None:
        client["who"] = {
            "identifier": {"system": "urn:fhirlake:client-id", "value": _check("client_id", client_id, _TOKEN)}
        }
    if cert_subject is not None:
        client["altId"] = _check("cert_subject", cert_subject, _PRINTABLE)
    if address is not None:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise AuditEventError("audit event: address is not an IP address") from None
        client["network"] = {"address": str(ip), "type": "2"}
    roles = [{"coding": [{"system": "urn:fhirlake:role", "code": _check("role", role, _TOKEN)}]}] if role else []
    if user is None:
        client.update({"role": roles} if roles else {})
        client.update({"purposeOfUse": purposes} if purposes else {})
        return [client]
    who = {"reference": user} if _REFERENCE.fullmatch(user) else {"identifier": {"value": _check("user", user, _TOKEN)}}
    person: dict[str, Any] = {
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
        "who": who,
        "requestor": True,
    }
    person.update({"role": roles} if roles else {})
    person.update({"purposeOfUse": purposes} if purposes else {})
    return [person, client]


def _entities(patient_keys: Sequence[str], resources: Sequence[str], query: str | None) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    for key in patient_keys:
        entities.append(
            {
                "what": {
                    "identifier": {
                        "system": "urn:fhirlake:patient-key",
                        "value": _check("patient_key", key, _PATIENT_KEY),
                    }
                },
                "type": {"system": _ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": _OBJECT_ROLE, "code": "1", "display": "Patient"},
            }
        )
    for reference in resources:
        entities.append(
            {
                "what": {"reference": _check("resource", reference, _REFERENCE)},
                "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": _OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
            }
        )
    if query is not None:
        encoded = base64.b64encode(_check("query", query, _PRINTABLE).encode()).decode()
        entities.append(
            {
                "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": _OBJECT_ROLE, "code": "24", "display": "Query"},
                "query": encoded,  # base64Binary in R4
            }
        )
    return entities


def _sensitivity_entity(labels: Mapping[tuple[str, str], int], count: int) -> dict[str, Any]:
    """The entity saying sensitive records were disclosed: their labels and counts, never which records."""
    codings = []
    details = [{"type": SENSITIVE_DETAIL, "valueString": str(int(count))}]
    for (system, code), n in sorted(labels.items(), key=lambda item: item[0][1]):
        codings.append(
            {"system": _check("label_system", system, _LABEL_SYSTEM), "code": _check("label", code, _LABEL_CODE)}
        )
        details.append({"type": f"{SENSITIVE_DETAIL}:{code}", "valueString": str(int(n))})
    return {
        "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"},
        "role": {"system": _OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
        "securityLabel": codings,
        "detail": details,
    }


def audit_event(
    action: AuditAction,
    *,
    outcome: Outcome = Outcome.SUCCESS,
    outcome_code: str | None = None,
    client_id: str | None = None,
    user: str | None = None,
    role: str | None = None,
    address: str | None = None,
    cert_subject: str | None = None,
    site: str = "default",
    patient_keys: Sequence[str] = (),
    resources: Sequence[str] = (),
    query: str | None = None,
    purpose_of_use: Sequence[str] = (),
    security_labels: Mapping[tuple[str, str], int] | None = None,
    sensitive_count: int = 0,
    request_id: str | None = None,
    recorded: datetime | None = None,
) -> dict[str, Any]:
    """An AuditEvent dict for ``action``, ready for :meth:`audit.trail.AuditTrail.record`.

    ``user`` is the fhirUser (``Practitioner/…``) or a token subject; with a user, the user is the
    requestor agent and the client (``client_id``, ``address``, ``cert_subject``) a second agent.
    ``patient_keys`` are pseudonyms (``security.pseudonym``), never patient ids; ``resources`` are
    ``Type/id`` references; ``query`` must already be stripped of PHI (route template and parameter
    names); ``purpose_of_use`` holds v3-ActReason codes (``TREAT``, ``ETREAT``…) and lands on the
    requestor agent (``purposeOfUse``) and on ``purposeOfEvent``; ``outcome_code`` is an error code
    such as ``key-shredded``. ``recorded`` defaults to now and must be timezone-aware.
    ``security_labels`` maps the ``(system, code)`` sensitivity labels of the records disclosed to how
    many carried each, ``sensitive_count`` is how many sensitive records there were; with a count they
    become one entity (``securityLabel`` and ``detail``), codes and numbers only.

    Raises AuditEventError if any value does not have the narrow form its argument allows.
    """
    event_type, subtype, crude = _KINDS[AuditAction(action)]
    purposes = [
        {"coding": [{"system": _PURPOSE, "code": _check("purpose_of_use", p, _PURPOSE_CODE)}]} for p in purpose_of_use
    ]
    subtypes = [subtype] if subtype else []
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": event_type,
        "subtype": [*subtypes, {"system": _ACTION_SYSTEM, "code": str(action)}],
        "action": crude,
        "recorded": _recorded(recorded),
        "outcome": Outcome(outcome).value,
        "agent": _agents(client_id, user, role, address, cert_subject, purposes),
        "source": {
            "site": _check("site", site, _TOKEN),
            "observer": {"display": "fhirlake"},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}],
        },
    }
    if outcome_code is not None:
        event["outcomeDesc"] = _check("outcome_code", outcome_code, _TOKEN)
    if purposes:
        event["purposeOfEvent"] = purposes
    entities = _entities(patient_keys, resources, query)
    if sensitive_count > 0:
        entities.append(_sensitivity_entity(security_labels or {}, sensitive_count))
    if request_id is not None:
        entities.append(
            {
                "what": {
                    "identifier": {
                        "system": "urn:fhirlake:request-id",
                        "value": _check("request_id", request_id, _TOKEN),
                    }
                }
            }
        )
    if entities:
        event["entity"] = entities
    return event
