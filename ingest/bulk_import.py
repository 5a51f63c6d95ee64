"""FHIR bulk ``$import`` of NDJSON files on the data dir, streaming with bounded memory.

Files are read line by line and sent in chunks of ``chunk`` resources through
``EmrIngest.receive`` with the ``fhir`` adapter — raw zone, Provenance,
enterprise patient key, validation, encryption, journal: the one path. Files
are ordered so that what others point at comes first (Organization, Location,
Practitioner, PractitionerRole, Patient, …): Synthea's conditional references
(``Practitioner?identifier=…``) then resolve against resources already stored.
A chunk that fails is retried line by line, so only the lines that really
cannot be stored become dead letters, each with its own reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from ingest.access import Access
from ingest.errors import InvalidInputError, Issue, NotSupportedError

if TYPE_CHECKING:
    from ingest.emr_ingest import EmrIngest

FIRST = ("Organization", "Location", "Practitioner", "PractitionerRole", "Medication", "Device", "Patient")
_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})


@dataclass(slots=True)
class FileReport:
    name: str
    lines: int = 0
    stored: int = 0
    dead_letters: list[int] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {"file": self.name, "lines": self.lines, "stored": self.stored, "deadLetters": self.dead_letters}


@dataclass(slots=True)
class ImportReport:
    files: list[FileReport] = field(default_factory=list)

    @property
    def stored(self) -> int:
        return sum(f.stored for f in self.files)

    @property
    def failed(self) -> int:
        return sum(len(f.dead_letters) for f in self.files)

    def as_json(self) -> dict[str, object]:
        return {"stored": self.stored, "failed": self.failed, "files": [f.as_json() for f in self.files]}

    def as_outcome(self) -> dict[str, object]:
        issues = []
        for report in self.files:
            text = (
                f"{report.name}: {report.lines} lines, {report.stored} stored, {len(report.dead_letters)} dead letters"
            )
            issues.append({"severity": "warning" if report.dead_letters else "information", "code": "informational",
                           "diagnostics": text})  # fmt: skip
        return {"resourceType": "OperationOutcome", "issue": issues or [
            {"severity": "information", "code": "informational", "diagnostics": "nothing to import"}]}  # fmt: skip


def type_of(path: Path) -> str:
    """The resource type a bulk file is named for (``Patient.000.ndjson`` -> ``Patient``)."""
    return path.name.split(".", 1)[0]


def order(paths: list[Path]) -> list[Path]:
    def rank(path: Path) -> tuple[int, str]:
        kind = type_of(path)
        return (FIRST.index(kind) if kind in FIRST else len(FIRST), path.name)

    return sorted(paths, key=rank)


class BulkImporter:
    def __init__(self, emr: EmrIngest, root: Path, chunk: int = 200) -> None:
        self._emr = emr
        self.root = root
        self._chunk = chunk

    def resolve(self, url: str) -> Path:
        """A ``file:`` URL or a path, which must name an NDJSON file under the import root."""
        parsed = urlparse(url)
        if parsed.scheme not in ("", "file"):
            raise NotSupportedError(
                "import url", [Issue("not-supported", "only file URLs on the data dir are imported")]
            )
        raw = Path(unquote(parsed.path if parsed.scheme else url))
        path = (raw if raw.is_absolute() else self.root / raw).resolve()
        if not path.is_relative_to(self.root.resolve()) or not path.is_file():
            raise InvalidInputError(
                "import url", [Issue("not-found", "the input is not a file under <data-dir>/import", ("input.url",))]
            )
        return path

    async def run_parameters(self, params: Any, access: Access | None) -> ImportReport:
        """Run a ``$import`` Parameters resource (inputFormat, input.type, input.url)."""
        if not isinstance(params, dict) or params.get("resourceType") != "Parameters":
            raise InvalidInputError("bad $import input", [Issue("invalid", "the body must be a Parameters resource")])
        paths = []
        for param in params.get("parameter") or []:
            if not isinstance(param, dict):
                continue
            if param.get("name") == "inputFormat" and param.get("valueCode") not in _FORMATS:
                raise NotSupportedError("format", [Issue("not-supported", "only application/fhir+ndjson is imported")])
            if param.get("name") == "input":
                parts = {p.get("name"): p for p in param.get("part") or [] if isinstance(p, dict)}
                url = (parts.get("url") or {}).get("valueUri") or (parts.get("url") or {}).get("valueUrl")
                if not isinstance(url, str):
                    raise InvalidInputError("bad $import input", [Issue("required", "input.url is required")])
                paths.append(self.resolve(url))
        if not paths:
            raise InvalidInputError("bad $import input", [Issue("required", "at least one input is required")])
        return await self.run(paths, access)

    async def run(self, paths: list[Path], access: Access | None) -> ImportReport:
        report = ImportReport()
        for path in order(paths):
            report.files.append(await self.import_file(path, access))
        return report

    async def import_file(self, path: Path, access: Access | None) -> FileReport:
        report = FileReport(path.name)
        for batch in _batches(path, self._chunk):
            report.lines += len(batch)
            await self._send(batch, report, access)
        return report

    async def _send(self, lines: list[bytes], report: FileReport, access: Access | None) -> None:
        result = await self._emr.receive("fhir", b"".join(lines), "application/fhir+ndjson", access)
        if result.error is None:
            report.stored += len(lines)
            return
        if len(lines) == 1:
            assert result.dead_letter is not None
            report.dead_letters.append(result.dead_letter)
            return
        self._emr.raw.resolve(result.sha, "fhir")  # superseded by the per-line attempts below
        self._emr.raw.mark(result.sha, "split")
        for line in lines:
            await self._send([line], report, access)


def _batches(path: Path, size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    with path.open("rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            batch.append(line if line.endswith(b"\n") else line + b"\n")
            if len(batch) >= size:
                yield batch
                batch = []
    if batch:
        yield batch
