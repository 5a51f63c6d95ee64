"""Errors raised by the SQL on FHIR view engine.

ViewError                       (lake.errors.LakeError)
 ├── ViewDefinitionError        the ViewDefinition is malformed (missing resource, bad column, ...)
 ├── FhirPathSyntaxError        a FHIRPath expression of the view cannot be parsed or uses an
 │                              unknown function or constant
 └── ViewEvaluationError        a well-formed view met data it cannot turn into rows
                                (several values in a non-collection column, a non-boolean filter)

Messages name the view's own parts (column names, paths, positions) and never a value read
from a resource: resource values may be PHI.
"""

from __future__ import annotations

from lake.errors import LakeError


class ViewError(LakeError):
    code = "view-error"


class ViewDefinitionError(ViewError):
    code = "view-invalid"


class FhirPathSyntaxError(ViewDefinitionError):
    code = "view-fhirpath"


class ViewEvaluationError(ViewError):
    code = "view-evaluation"
