"""SQL on FHIR v2: run a ViewDefinition over FHIR resources into Arrow record batches.

    plan = ViewPlan(view_json, policy=None)        # validates; raises ViewDefinitionError
    for batch in plan.batches(resources): ...       # streams; resources may be any iterable
    table = run_view(view_json, resources)          # small inputs: one pyarrow Table
    phi_columns(plan.view, ["name", "identifier"])  # columns that reach PHI elements

Errors: lake.views.errors (ViewDefinitionError, FhirPathSyntaxError, ViewEvaluationError).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from lake.views.definition import ColumnDef, CompiledView, compile_view
from lake.views.reach import ColumnReach, column_reach, filter_elements, phi_columns, touches
from lake.views.runner import ColumnAction, ColumnPolicy, RowBuilder, iter_rows
from lake.views.table import DEFAULT_BATCH_ROWS, batches, schema_of
from lake.views.writers import FORMATS, write_batches


class ViewPlan:
    """A validated view, the caller's column policy applied, ready to run over any number of resources."""

    def __init__(self, view: Any, policy: ColumnPolicy | None = None) -> None:
        self.view: CompiledView = compile_view(view)
        self._builder = RowBuilder(self.view, policy)
        self.schema: pa.Schema = schema_of(self._builder.columns)

    @property
    def resource_type(self) -> str:
        return self.view.resource

    def batches(
        self, resources: Iterable[dict[str, Any]], batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> Iterator[pa.RecordBatch]:
        """Record batches of at most ``batch_rows`` rows; raises ViewEvaluationError on bad data."""
        return batches(iter_rows(self._builder, resources), self.schema, batch_rows)

    def write(
        self, resources: Iterable[dict[str, Any]], fmt: str, path: Path, batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> int:
        """Write the view's rows to ``path`` as parquet, csv or ndjson; the number of rows."""
        return write_batches(self.batches(resources, batch_rows), self.schema, fmt, path)


def run_view(
    view: Any,
    resources: Iterable[dict[str, Any]],
    policy: ColumnPolicy | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> pa.Table:
    """All rows of ``view`` over ``resources`` as one table (use ViewPlan.batches for large inputs)."""
    plan = ViewPlan(view, policy)
    return pa.Table.from_batches(list(plan.batches(resources, batch_rows)), schema=plan.schema)


__all__ = [
    "FORMATS",
    "ColumnAction",
    "ColumnDef",
    "ColumnPolicy",
    "ColumnReach",
    "CompiledView",
    "ViewPlan",
    "column_reach",
    "compile_view",
    "filter_elements",
    "phi_columns",
    "run_view",
    "touches",
]
