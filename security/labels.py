"""Which records are sensitive: the security labels of ``meta.security`` that call for extra scrutiny.

A resource is sensitive when it carries a confidentiality code ``R`` (restricted) or ``V`` (very
restricted) from HL7 v3 Confidentiality
(http://terminology.hl7.org/CodeSystem/v3-Confidentiality), or a sensitivity category from HL7 v3
ActCode (http://terminology.hl7.org/CodeSystem/v3-ActCode, the ``_InformationSensitivityPolicy``
codes): substance use under 42 CFR Part 2 (ETH, SUD), HIV, psychiatry and behavioural health (PSY,
BH), sexual or domestic violence (SDV), sexuality and reproductive health (SEX), sexually transmitted
disease (STD), genetic disease (GDIS) and taboo (TBOO). The codes are policy vocabulary, not PHI:
the audit trail may record them in clear.
"""

from __future__ import annotations

from typing import Any

import orjson

CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

SENSITIVE: dict[str, frozenset[str]] = {
    CONFIDENTIALITY: frozenset({"R", "V"}),
    ACT_CODE: frozenset({"ETH", "HIV", "PSY", "SDV", "SEX", "STD", "SUD", "BH", "GDIS", "TBOO"}),
}


def sensitivity(resource: dict[str, Any]) -> frozenset[tuple[str, str]]:
    """The ``(system, code)`` sensitive labels of a resource's ``meta.security`` (empty: not sensitive)."""
    meta = resource.get("meta")
    labels = meta.get("security") if isinstance(meta, dict) else None
    if not isinstance(labels, list):
        return frozenset()
    return frozenset(
        (label["system"], label["code"])
        for label in labels
        if isinstance(label, dict) and label.get("code") in SENSITIVE.get(str(label.get("system")), ())
    )


def sensitivity_of(body: bytes) -> frozenset[tuple[str, str]]:
    """:func:`sensitivity` of a serialized resource; a body without ``security`` is not parsed at all."""
    if b'"security"' not in body:
        return frozenset()
    resource = orjson.loads(body)
    return sensitivity(resource) if isinstance(resource, dict) else frozenset()
