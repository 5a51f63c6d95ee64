"""SQL on FHIR views over the installation: the current resources of a type, opened, streamed.

``ViewRunner.resources(rtype)`` pages through the journal's ``current`` index in id order
(keyset paging, a bounded chunk at a time), takes each body from the journal while it is hot
and from the lake once pruned, and opens it with the patient's key. Deleted resources and
erased patients (crypto-shredded keys) are skipped. ``run`` feeds that stream to a
``lake.views.ViewPlan`` and writes the rows; at no point is a whole type held in memory.

Access control: ``phi_columns`` lists the view's columns that reach PHI elements of the
field policy; ``phi_policy`` turns a decision (drop or mask them) into the engine's column
policy. Callers acting for a researcher must refuse, drop or mask those columns.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ingest.journal import VERSION_COLUMNS, Journal
from lake.errors import LakeDataError
from lake.reader import LakeReader
from lake.views import ColumnAction, ColumnDef, ColumnPolicy, ViewPlan, compile_view, filter_elements, touches
from lake.views import phi_columns as _phi_columns
from security.errors import KeyShreddedError
from security.policy import field_policy
from security.sealing import BODY_PATH, RowSealer

DEFAULT_CHUNK = 500
DEFAULT_BATCH_ROWS = 8192
_COLUMNS = ", ".join(f"v.{c.strip()}" for c in VERSION_COLUMNS.split(","))


@dataclass(frozen=True, slots=True)
class ViewRunReport:
    resource_type: str
    rows: int
    columns: list[str]
    phi_columns: list[str]  # columns reaching PHI (after the policy: masked ones still listed)
    skipped_erased: int


def phi_columns(view: Any) -> list[str]:
    """Columns of ``view`` that reach an element the field policy names as PHI (for its resource type).

    Raises lake.views.errors.ViewDefinitionError for an invalid view.
    """
    compiled = compile_view(view)
    return _phi_columns(compiled, field_policy().phi_elements(compiled.resource))


def phi_filters(view: Any) -> list[str]:
    """PHI elements the view's ``where`` filters read (they decide which rows a caller sees)."""
    compiled = compile_view(view)
    phi = field_policy().phi_elements(compiled.resource)
    return sorted(e for e in filter_elements(compiled) if any(touches(e, p) for p in phi))


def phi_policy(view: Any, action: ColumnAction) -> ColumnPolicy:
    """A column policy that applies ``action`` (drop or mask) to the PHI columns of ``view``."""
    flagged = frozenset(phi_columns(view))

    def policy(column: ColumnDef) -> ColumnAction:
        return action if column.name in flagged else ColumnAction.KEEP

    return policy


class ViewRunner:
    """Runs views over the current resources of this installation (journal index + lake bodies)."""

    def __init__(self, journal: Journal, lake: LakeReader, sealer: RowSealer, chunk: int = DEFAULT_CHUNK) -> None:
        self._journal = journal
        self._lake = lake
        self._sealer = sealer
        self._chunk = chunk
        self.skipped_erased = 0

    def resources(self, rtype: str) -> Iterator[dict[str, Any]]:
        """Every current, not deleted, not erased resource of ``rtype`` as parsed JSON, in id order.

        Raises LakeDataError when an indexed version's body is in neither the journal nor the lake.
        """
        last = ""
        while True:
            rows = (
                self._journal.reader()
                .execute(
                    f"SELECT {_COLUMNS} FROM current c JOIN versions v "  # noqa: S608
                    "ON v.rtype=c.rtype AND v.id=c.id AND v.version=c.version "
                    "WHERE c.rtype=? AND c.deleted=0 AND c.id>? ORDER BY c.id LIMIT ?",
                    (rtype, last, self._chunk),
                )
                .fetchall()
            )
            if not rows:
                return
            last = str(rows[-1][1])
            yield from self._open(rtype, rows)

    def _open(self, rtype: str, rows: list[tuple[Any, ...]]) -> Iterator[dict[str, Any]]:
        missing = [(str(r[1]), int(r[2]), r[6]) for r in rows if r[13] is None]
        cold = self._lake.bodies(rtype, missing) if missing else {}
        for r in rows:
            rid, version = str(r[1]), int(r[2])
            sealed = r[13] if r[13] is not None else cold.get((rid, version))
            if sealed is None:
                raise LakeDataError("a resource version is indexed but its body was not found in the lake")
            try:
                body = self._sealer.open(rtype, rid, version, BODY_PATH, bytes(sealed))
            except KeyShreddedError:  # erased between the index read and now
                self.skipped_erased += 1
                continue
            resource: dict[str, Any] = orjson.loads(body)
            yield resource

    def run(self, plan: ViewPlan, fmt: str, out: Path, batch_rows: int = DEFAULT_BATCH_ROWS) -> ViewRunReport:
        """Write ``plan``'s rows over the current resources of its type to ``out`` in ``fmt``.

        Raises ViewEvaluationError on data the view cannot turn into rows, LakeDataError on a lost body.
        """
        rows = plan.write(self.resources(plan.resource_type), fmt, out, batch_rows)
        flagged = _phi_columns(plan.view, field_policy().phi_elements(plan.resource_type))
        return ViewRunReport(plan.resource_type, rows, list(plan.schema.names), flagged, self.skipped_erased)
