"""The EMR use case: raw payload in, canonical FHIR through the one ingest path, nothing lost.

``receive`` keeps the raw payload sealed in the raw zone, runs the adapter,
places every Patient under its enterprise key (``ingest.empi``), applies ADT
merges as links, and submits the transaction through ``IngestService.submit_bundle``
— the same validation, authorization, encryption, journal and audit as ``POST /fhir``.
A payload that fails anywhere after receipt becomes a dead letter with a PHI-free
reason; ``replay`` and ``retry`` run the current mapping over kept payloads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import structlog
from starlette.concurrency import run_in_threadpool

from ingest import emr_adapters
from ingest.access import Access
from ingest.bulk_import import BulkImporter
from ingest.empi import ENTERPRISE_SYSTEM, PatientIndex
from ingest.emr_adapters import AdapterContext, EmrAdapter, Merge, Normalized
from ingest.emr_adapters.bundle import payload_hash
from ingest.errors import BackpressureError, ForbiddenError, IngestError, Issue, ResourceNotFoundError
from ingest.raw_zone import RawZone
from ingest.reads import ResourceReads
from ingest.service import IngestService, Outcome
from security.keys import DataKeys
from security.pseudonym import Pseudonymizer
from security.sealing import RowSealer

log = structlog.get_logger("ingest.emr")
ID_KEY_SUBJECT = "emr-adapter-ids"  # the key behind adapters' stable resource ids


@dataclass(slots=True)
class EmrResult:
    adapter: str
    sha: str
    outcome: Outcome | None = None
    warnings: list[str] = field(default_factory=list)
    error: IngestError | None = None
    reply: tuple[bytes, str] | None = None
    dead_letter: int | None = None


@dataclass(slots=True)
class ReplayReport:
    adapter: str
    total: int = 0
    stored: int = 0
    failed: int = 0

    def as_json(self) -> dict[str, object]:
        return {"adapter": self.adapter, "total": self.total, "stored": self.stored, "failed": self.failed}


def adapter_named(name: str) -> EmrAdapter:
    """The registered adapter (404 OperationOutcome for an unknown name)."""
    try:
        return emr_adapters.load(name)
    except KeyError:
        raise ResourceNotFoundError(
            "unknown adapter",
            [
                Issue(
                    "not-found",
                    f"no EMR adapter is registered under this name; known: {', '.join(emr_adapters.names())}",
                )
            ],
        ) from None


def reason_of(exc: IngestError) -> str:
    """The dead letter's reason: the error's issues (codes, paths, PHI-free diagnostics)."""
    parts = []
    for issue in exc.issues[:20]:
        where = f" at {', '.join(issue.expression)}" if issue.expression else ""
        parts.append(f"{issue.code}{where}: {issue.diagnostics}")
    return "; ".join(parts) or exc.message


class EmrIngest:
    def __init__(
        self,
        service: IngestService,
        raw: RawZone,
        index: PatientIndex,
        reads: ResourceReads,
        id_key: bytes,
        import_root: Path,
    ) -> None:
        self._service = service
        self.raw = raw
        self.index = index
        self._reads = reads
        self._id_key = id_key
        self.bulk = BulkImporter(self, import_root)

    def __repr__(self) -> str:
        return "EmrIngest()"

    def close(self) -> None:
        self.raw.close()
        self.index.close()

    async def receive(
        self, adapter_name: str, payload: bytes, content_type: str | None, access: Access | None
    ) -> EmrResult:
        """Keep, normalize and store one payload; failures come back as a result with a dead letter."""
        adapter = adapter_named(adapter_name)
        sha = payload_hash(payload)
        await run_in_threadpool(self.raw.keep, sha, adapter.name, content_type, payload)
        return await self._process(adapter, sha, payload, access)

    async def replay(self, adapter_name: str, since: datetime) -> ReplayReport:
        """Re-run the current mapping of ``adapter_name`` over its raw payloads received since ``since``."""
        adapter = adapter_named(adapter_name)
        report = ReplayReport(adapter.name)
        since_us = int(since.timestamp() * 1_000_000)
        for record in await run_in_threadpool(lambda: list(self.raw.since(adapter.name, since_us))):
            if record.status == "split":  # a bulk chunk whose lines were kept and processed one by one
                continue
            payload = await run_in_threadpool(self.raw.open, record.sha)
            result = await self._process(adapter, record.sha, payload, None)
            report.total += 1
            report.stored += result.error is None
            report.failed += result.error is not None
        return report

    async def retry(self, letter_id: int, access: Access | None) -> EmrResult:
        """Process a dead letter's payload again with the current mapping."""
        letter = await run_in_threadpool(self.raw.letter, letter_id)
        if letter is None:
            raise ResourceNotFoundError("dead letter not found")
        payload = await run_in_threadpool(self.raw.open, letter.sha)
        return await self._process(adapter_named(letter.adapter), letter.sha, payload, access)

    async def _process(self, adapter: EmrAdapter, sha: str, payload: bytes, access: Access | None) -> EmrResult:
        result = EmrResult(adapter.name, sha)
        try:
            normalized = await run_in_threadpool(self._normalize, adapter, payload)
            result.warnings = normalized.warnings
            bundle = await run_in_threadpool(self._link_patients, normalized)
            result.outcome = await self._service.submit_bundle(bundle, None, access)
        except (ForbiddenError, BackpressureError):
            raise  # the sender is told and must resend; the raw payload stays kept
        except IngestError as exc:
            result.error = exc
            letter = await run_in_threadpool(self.raw.dead_letter, sha, adapter.name, exc.code, reason_of(exc))
            result.dead_letter = letter.id
            log.warning("emr_dead_letter", adapter=adapter.name, code=exc.code, letter=letter.id)
        else:
            await run_in_threadpool(self._stored, sha, adapter.name)
        result.reply = adapter.reply(payload, result.error)
        return result

    def _stored(self, sha: str, adapter: str) -> None:
        self.raw.mark(sha, "stored")
        self.raw.resolve(sha, adapter)

    def _normalize(self, adapter: EmrAdapter, payload: bytes) -> Normalized:
        context = AdapterContext.keyed(self._id_key, datetime.now(UTC))
        try:
            return adapter.normalize(payload, context)
        except IngestError:
            raise
        except Exception as exc:  # a mapping bug must not lose the message: it becomes a dead letter
            log.error("emr_adapter_failed", adapter=adapter.name, error=type(exc).__name__)
            raise IngestError(
                "adapter failed", [Issue("exception", f"the {adapter.name} adapter failed ({type(exc).__name__})")]
            ) from None

    def _link_patients(self, normalized: Normalized) -> bytes:
        """Enterprise keys on every Patient; ADT merges as Patient.link both ways."""
        bundle: dict[str, Any] = orjson.loads(normalized.bundle)
        patients = [
            e["resource"] for e in bundle["entry"] if (e.get("resource") or {}).get("resourceType") == "Patient"
        ]
        for patient in patients:
            if isinstance(patient.get("id"), str):
                _set_enterprise_key(patient, self.index.assign(patient))
        for merge in normalized.merges:
            bundle["entry"].append(self._prior_entry(merge))
        return orjson.dumps(bundle)

    def _prior_entry(self, merge: Merge) -> dict[str, Any]:
        ekey = self.index.merge(merge.survivor, merge.prior)
        try:
            stored = self._reads.read("Patient", merge.prior)
            prior: dict[str, Any] = orjson.loads(stored.body or b"{}")
        except IngestError:  # never seen here: a stub that only carries the link
            prior = {"resourceType": "Patient", "id": merge.prior}
        prior.pop("meta", None)
        links = [link for link in prior.get("link") or [] if link.get("type") != "replaced-by"]
        prior["link"] = [*links, {"other": {"reference": f"Patient/{merge.survivor}"}, "type": "replaced-by"}]
        prior["active"] = False
        _set_enterprise_key(prior, ekey)
        return {"resource": prior, "request": {"method": "PUT", "url": f"Patient/{merge.prior}"}}


def _set_enterprise_key(patient: dict[str, Any], ekey: str) -> None:
    idents = [i for i in patient.get("identifier") or [] if i.get("system") != ENTERPRISE_SYSTEM]
    idents.append({"use": "secondary", "system": ENTERPRISE_SYSTEM, "value": ekey})
    patient["identifier"] = idents


def build_emr(
    root: Path, keys: DataKeys, pseudo: Pseudonymizer, sealer: RowSealer, service: IngestService, reads: ResourceReads
) -> EmrIngest:
    """The EMR use case over ``<data-dir>/ingest`` (raw zone, dead letters, enterprise patient index)."""
    return EmrIngest(
        service,
        RawZone(root / "ingest" / "raw.db", sealer),
        PatientIndex(root / "ingest" / "empi.db", pseudo, sealer),
        reads,
        keys.secret(ID_KEY_SUBJECT),
        root / "import",
    )
