"""Root of the error hierarchy shared by every package.

FhirlakeError               stable ``code``, PHI-free message
 ├── ingest.errors.IngestError
 ├── lake.errors.LakeError
 └── security.errors.SecurityError
"""

from __future__ import annotations


class FhirlakeError(Exception):
    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
