"""SQL on FHIR views over the installation: the current resources of a type, opened, streamed.

``ViewRunner.resources(rtype)`` streams the type's lake table a bounded batch at a time,
keeps the versions the journal's index says are current, adds the versions accepted since the
lake's last commit from the journal, and opens each body with the patient's key. Deleted resources and
erased patients (crypto-shredded keys) are skipped. ``run`` feeds that stream to a
``lake.views.ViewPlan`` and writes the rows; at no point is a whole type held in memory.

Access control: ``phi_columns`` lists the view's columns that reach PHI elements of the
field policy; ``phi_policy`` turns a decision (drop or mask them) into the engine's column
policy. Callers acting for a researcher must refuse, drop or mask those columns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ingest.journal import VERSION_COLUMNS, Journal
from lake.catalog import LakeCatalog
from lake.errors import LakeDataError
from lake.reader import LakeReader
from lake.views import ColumnAction, ColumnDef, ColumnPolicy, ViewPlan, compile_view, filter_elements, touches
from lake.views import phi_columns as _phi_columns
from lake.views.source import LakeBodies
from security.errors import KeyShreddedError
from security.policy import field_policy
from security.sealing import BODY_PATH, RowSealer

DEFAULT_CHUNK = 500
_ERASED = 2  # current.deleted of an erased patient's resources (ingest/erasure.py)
DEFAULT_BATCH_ROWS = 8192
_COLUMNS = ", ".join(f"v.{c.strip()}" for c in VERSION_COLUMNS.split(","))


@dataclass(frozen=True, slots=True)
class Visibility:
    """What one caller may see of a run: an SQL condition over ``current c`` (``Access.visibility``),
    how a body is presented to them (``Access.present``: de-identification), and a callback per
    resource disclosed (``Access.disclosed``: accounting of disclosures) and one given its clear body
    (``Access.labelled``: sensitivity codes for the audit record)."""

    where: str = "1=1"
    params: tuple[object, ...] = ()
    present: Callable[[bytes], bytes] | None = None
    disclosed: Callable[[str, str, str | None], None] | None = None
    labelled: Callable[[str, str, bytes], None] | None = None


EVERYTHING = Visibility()


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
    """Runs views over the current resources of this installation (journal index + lake bodies).

    A run sees the installation as of its start (journal seq ``H``): each resource once, at its
    latest version accepted by then. Versions the lake already holds (seq <= the lake's
    watermark ``L``) are streamed from the lake; the rest (``L < seq <= H``) from the journal.
    Erasures are honoured as they happen.
    """

    def __init__(self, journal: Journal, catalog: LakeCatalog, sealer: RowSealer, chunk: int = DEFAULT_CHUNK) -> None:
        self._journal = journal
        self._bodies = LakeBodies(catalog)
        self._lake = LakeReader(catalog)
        self._sealer = sealer
        self._chunk = chunk
        self.skipped_erased = 0

    def resources(self, rtype: str, visibility: Visibility = EVERYTHING) -> Iterator[dict[str, Any]]:
        """Every current, not deleted, not erased resource of ``rtype`` the caller may see, as parsed JSON.

        Raises LakeDataError when an indexed version's body is in neither the journal nor the lake.
        """
        lake_seq = self._journal.committed_seq()  # read before the lake: the lake holds at least this
        high = max(self._journal.last_seq(), lake_seq)
        for bodies in self._bodies.stream(rtype, lake_seq, self._chunk):
            latest = self._latest(rtype, sorted({b.id for b in bodies}), high, visibility)
            for body in bodies:
                if latest.get(body.id) == body.version:
                    opened = self._open(rtype, body.id, body.version, body.sealed, body.patient_key, visibility)
                    if opened is not None:
                        yield opened
        yield from self._recent(rtype, lake_seq, high, visibility)

    def _latest(self, rtype: str, ids: list[str], high: int, visibility: Visibility) -> dict[str, int]:
        """id -> latest version as of seq ``high``, for ids whose latest version is live and not erased."""
        out: dict[str, int] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = (
                self._journal.reader()
                .execute(
                    "SELECT v.id, v.version, v.deleted, c.deleted FROM versions v "  # noqa: S608
                    "JOIN current c ON c.rtype=v.rtype AND c.id=v.id "
                    f"WHERE v.rtype=? AND v.seq<=? AND v.id IN ({','.join('?' * len(chunk))}) "
                    f"AND ({visibility.where}) ORDER BY v.id, v.version",
                    (rtype, high, *chunk, *visibility.params),
                )
                .fetchall()
            )
            versions = {str(r[0]): (int(r[1]), bool(r[2]) or int(r[3]) == _ERASED) for r in rows}
            out.update((rid, version) for rid, (version, gone) in versions.items() if not gone)
        return out

    def _recent(self, rtype: str, low: int, high: int, visibility: Visibility) -> Iterator[dict[str, Any]]:
        """Latest live versions accepted after the lake's watermark, in (seq, id) keyset pages."""
        seq, rid = low, ""
        while True:
            rows = (
                self._journal.reader()
                .execute(
                    f"SELECT {_COLUMNS} FROM versions v JOIN current c ON c.rtype=v.rtype AND c.id=v.id "  # noqa: S608
                    "WHERE v.rtype=? AND v.seq>? AND v.seq<=? AND (v.seq>? OR (v.seq=? AND v.id>?)) "
                    "AND v.deleted=0 AND c.deleted<>? AND NOT EXISTS (SELECT 1 FROM versions w "
                    "WHERE w.rtype=v.rtype AND w.id=v.id AND w.version>v.version AND w.seq<=?) "
                    f"AND ({visibility.where}) ORDER BY v.seq, v.id LIMIT ?",
                    (rtype, low, high, seq, seq, rid, _ERASED, high, *visibility.params, self._chunk),
                )
                .fetchall()
            )
            if not rows:
                return
            seq, rid = int(rows[-1][3]), str(rows[-1][1])
            missing = [(str(r[1]), int(r[2]), r[6]) for r in rows if r[13] is None]
            cold = self._lake.bodies(rtype, missing) if missing else {}  # pruned while this ran
            for r in rows:
                sealed = r[13] if r[13] is not None else cold.get((str(r[1]), int(r[2])))
                if sealed is None:
                    raise LakeDataError("a resource version is indexed but its body was not found in the lake")
                opened = self._open(rtype, str(r[1]), int(r[2]), bytes(sealed), r[6], visibility)
                if opened is not None:
                    yield opened

    def _open(
        self, rtype: str, rid: str, version: int, sealed: bytes, patient_key: str | None, visibility: Visibility
    ) -> dict[str, Any] | None:
        try:
            body = self._sealer.open(rtype, rid, version, BODY_PATH, sealed)
        except KeyShreddedError:  # erased while this ran
            self.skipped_erased += 1
            return None
        if visibility.labelled is not None:
            visibility.labelled(rtype, rid, body)
        if visibility.present is not None:
            body = visibility.present(body)
        if visibility.disclosed is not None:
            visibility.disclosed(rtype, rid, patient_key)
        resource: dict[str, Any] = orjson.loads(body)
        return resource

    def run(
        self,
        plan: ViewPlan,
        fmt: str,
        out: Path,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        visibility: Visibility = EVERYTHING,
    ) -> ViewRunReport:
        """Write ``plan``'s rows over the current resources of its type to ``out`` in ``fmt``.

        Raises ViewEvaluationError on data the view cannot turn into rows, LakeDataError on a lost body.
        """
        rows = plan.write(self.resources(plan.resource_type, visibility), fmt, out, batch_rows)
        flagged = _phi_columns(plan.view, field_policy().phi_elements(plan.resource_type))
        return ViewRunReport(plan.resource_type, rows, list(plan.schema.names), flagged, self.skipped_erased)
