"""Errors raised by the lake.

LakeError                 (fhirlake.errors.FhirlakeError)
 ├── LakeUnavailableError the catalog or warehouse cannot be reached or committed to
 ├── LakeDataError        a row read back from the lake is missing or malformed
 └── LakeSchemaError      a table was written by an incompatible older release
"""

from __future__ import annotations

from fhirlake.errors import FhirlakeError


class LakeError(FhirlakeError):
    code = "lake-error"


class LakeUnavailableError(LakeError):
    code = "lake-unavailable"


class LakeDataError(LakeError):
    code = "lake-data"


class LakeSchemaError(LakeError):
    code = "lake-schema"
