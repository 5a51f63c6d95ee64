"""Errors raised by the audit package.

AuditError                    (fhirlake.errors.FhirlakeError)
 ├── AuditUnavailableError    the record could not be made durable: the caller answers 503
 ├── AuditIntegrityError      the stored chain is broken (tampering, loss): ``kind`` says how
 ├── AuditEventError          an event was built with a value the audit format refuses
 └── AuditConfigError         a signing seed or a sink name is unusable

Messages never carry event contents: only sequence numbers, hashes, kinds and codes.
"""

from __future__ import annotations

from fhirlake.errors import FhirlakeError


class AuditError(FhirlakeError):
    code = "audit-error"


class AuditUnavailableError(AuditError):
    code = "audit-unavailable"


class AuditIntegrityError(AuditError):
    code = "audit-integrity"

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class AuditEventError(AuditError):
    code = "audit-event"


class AuditConfigError(AuditError):
    code = "audit-config"
