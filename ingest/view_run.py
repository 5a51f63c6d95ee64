"""``ViewDefinition/$run``: one SQL on FHIR view over what the caller may see, answered in one response.

The caller's visibility decides which resources the view sees; de-identified
callers get de-identified bodies and every column that reaches a PHI element
is masked (nulls), so a researcher's view never returns identifiers. Output is
bounded by ``_limit`` (at most ``max_rows``); larger extracts belong to
``fhirlake views run`` or ``$export``.
"""

from __future__ import annotations

import itertools
from typing import Any

from ingest.access import Access
from ingest.errors import InvalidInputError, Issue
from ingest.views import ViewRunner, Visibility, phi_policy
from lake.views import ColumnAction, ViewPlan
from lake.views.writers import encode_batches

MEDIA_TYPES = {
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
}


def view_of(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The ViewDefinition and the scalar parameters of a ``$run`` body (a Parameters or the view itself)."""
    if body.get("resourceType") == "ViewDefinition":
        return body, {}
    if body.get("resourceType") != "Parameters":
        raise _invalid("the body is a Parameters resource or a ViewDefinition")
    view: dict[str, Any] | None = None
    scalars: dict[str, str] = {}
    for param in body.get("parameter") or []:
        if not isinstance(param, dict):
            continue
        if param.get("name") == "viewResource" and isinstance(param.get("resource"), dict):
            view = param["resource"]
        for key, value in param.items():
            if key.startswith("value") and isinstance(value, str | int | bool):
                scalars[str(param.get("name"))] = str(value).lower() if isinstance(value, bool) else str(value)
    if view is None:
        raise _invalid("Parameters.viewResource (a ViewDefinition) is required")
    return view, scalars


def run_view_for(
    runner: ViewRunner, view: dict[str, Any], fmt: str, limit: int, access: Access | None
) -> tuple[bytes, str]:
    """Rows of ``view`` as ``fmt`` (json, ndjson, csv, parquet); raises InvalidInputError, ForbiddenError,
    lake.views.errors.ViewError."""
    if fmt not in MEDIA_TYPES:
        raise _invalid("_format must be json, ndjson, csv or parquet")
    rtype = str(view.get("resource") or "")
    seen, masked = Visibility(), False
    if access is not None:
        decision = access.require_type("search", rtype)
        where, params = access.visibility(rtype, decision)
        masked = decision.masked

        def present(body: bytes) -> bytes:
            return access.present(decision, body)

        seen = Visibility(where, tuple(params), present, access.disclosed, access.labelled)
    plan = ViewPlan(view, phi_policy(view, ColumnAction.MASK) if masked else None)
    rows = itertools.islice(runner.resources(plan.resource_type, seen), limit)
    return encode_batches(plan.batches(rows), plan.schema, fmt), MEDIA_TYPES[fmt]


def _invalid(why: str) -> InvalidInputError:
    return InvalidInputError("invalid $run request", [Issue("invalid", why)])
