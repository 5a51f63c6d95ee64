"""Who is calling: the authenticated principal every authorization decision is about."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    EMR_INTEGRATION = "emr-integration"  # writes to its own tenant (mTLS + OAuth2)
    CLINICIAN = "clinician"  # reads patients of its organization / care team; break-glass
    PATIENT_APP = "patient-app"  # only its own patient compartment
    RESEARCHER = "researcher"  # de-identified views only
    COMPLIANCE_OFFICER = "compliance-officer"  # audit only, no clinical data
    OPS = "ops"  # DR and administration, no PHI


@dataclass(frozen=True, slots=True)
class Principal:
    client_id: str
    tenant: str
    role: Role
    scopes: tuple[str, ...] = ()  # SMART scopes granted by the access token, as strings
    patient: str | None = None  # patient-app binding, or the patient launch context of an OIDC token
    fhir_user: str | None = None  # e.g. "Practitioner/123" (OIDC fhirUser claim or client registration)
    organization: str | None = None  # the clinician's organization id (ABAC)
    cert_subject: str | None = None  # verified mTLS client certificate subject (RFC 4514 string)
    source_system: str | None = None  # the EMR integration's source system
    token_id: str | None = None  # jti of the access token, for audit

    def __repr__(self) -> str:
        return f"Principal(client_id={self.client_id!r}, tenant={self.tenant!r}, role={self.role.value})"
