"""Errors of the EMR adapters: the payload could not be turned into canonical FHIR.

    AdapterError (ingest.errors.InvalidInputError, 400)
     └── UnsupportedMessageError   a well-formed message this adapter does not map

Messages name element paths, segment/field positions and codes only: never a
value from the payload (it may be PHI).
"""

from __future__ import annotations

from ingest.errors import InvalidInputError, Issue


class AdapterError(InvalidInputError):
    code = "adapter-rejected"

    def __init__(self, message: str, issues: list[Issue] | None = None, *, where: str = "") -> None:
        super().__init__(message, issues or [Issue("invalid", message, (where,) if where else ())])


class UnsupportedMessageError(AdapterError):
    code = "adapter-unsupported"
    issue_code = "not-supported"

    def __init__(self, message: str, *, where: str = "") -> None:
        super().__init__(message, [Issue("not-supported", message, (where,) if where else ())])
