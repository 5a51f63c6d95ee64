"""Errors raised by the ingest use cases.

    IngestError                     (fhirlake.errors.FhirlakeError)
     ├── InvalidInputError          400  the request or an entry is malformed or invalid
     ├── NotSupportedError          400  a valid FHIR request this server does not implement
     ├── PayloadTooLargeError       413  past a configured limit (size, depth, entries)
     ├── UnsupportedMediaTypeError  415
     ├── NotAcceptableError         406
     ├── ForbiddenError             403  the caller may not do this (never says what exists)
     ├── ResourceNotFoundError      404
     ├── ResourceGoneError          410  the current version is a deletion
     ├── ConflictError              409  version conflict, idempotency key reuse
     ├── PreconditionFailedError    412  If-Match failed, conditional matched several
     └── BackpressureError          503  the service cannot accept more work now

Every error carries OperationOutcome issues; messages never contain PHI (no
input values, only element paths, entry indexes and codes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fhirlake.errors import FhirlakeError


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome.issue: ``code`` is a FHIR issue-type code."""

    code: str
    diagnostics: str
    expression: tuple[str, ...] = field(default_factory=tuple)
    severity: str = "error"

    def as_fhir(self) -> dict[str, object]:
        out: dict[str, object] = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            out["expression"] = list(self.expression)
        return out


class IngestError(FhirlakeError):
    code = "ingest-error"
    issue_code = "processing"

    def __init__(self, message: str, issues: list[Issue] | None = None) -> None:
        super().__init__(message)
        self.issues = issues or [Issue(self.issue_code, message)]

    def __reduce__(self) -> tuple[object, ...]:
        # Errors cross the validation process pool boundary.
        return (type(self), (self.message, self.issues))


class InvalidInputError(IngestError):
    code = "invalid-input"
    issue_code = "invalid"


class NotSupportedError(IngestError):
    code = "not-supported"
    issue_code = "not-supported"


class PayloadTooLargeError(IngestError):
    code = "too-large"
    issue_code = "too-long"


class UnsupportedMediaTypeError(IngestError):
    code = "unsupported-media-type"
    issue_code = "not-supported"


class NotAcceptableError(IngestError):
    code = "not-acceptable"
    issue_code = "not-supported"


class InvalidRequestError(InvalidInputError):
    """A malformed OAuth2 token request (400 invalid_request)."""

    code = "invalid_request"


class ForbiddenError(IngestError):
    code = "forbidden"
    issue_code = "forbidden"


class ResourceNotFoundError(IngestError):
    code = "not-found"
    issue_code = "not-found"


class ResourceGoneError(IngestError):
    code = "gone"
    issue_code = "deleted"


class ConflictError(IngestError):
    code = "conflict"
    issue_code = "conflict"


class PreconditionFailedError(IngestError):
    code = "precondition-failed"
    issue_code = "conflict"


class BackpressureError(IngestError):
    code = "busy"
    issue_code = "transient"


class ThrottledError(IngestError):
    """A client past its rate or concurrency limit (429); ``retry_after_s`` says when to come back."""

    code = "throttled"
    issue_code = "throttled"
    retry_after_s: int = 1


def entry_issue(index: int | None, path: str, code: str, message: str) -> Issue:
    """An issue located at ``Bundle.entry[index].<path>`` (or at ``path`` when not in a bundle)."""
    where = f"Bundle.entry[{index}]" + (f".{path}" if path else "") if index is not None else path
    return Issue(code, message, (where,) if where else ())


def error_from_code(code: str, issues: list[Issue]) -> IngestError:
    """Rebuild an error from its stable code (used when replaying a stored outcome)."""
    for cls in _all_subclasses(IngestError):
        if cls.code == code:
            return cls("replayed outcome", issues)
    return IngestError("replayed outcome", issues)


def _all_subclasses(cls: type[IngestError]) -> list[type[IngestError]]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out
