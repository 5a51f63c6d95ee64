"""Partition spec and sort order of the lake tables, measured.

Builds a synthetic Observation workload in the lake schema (patients with about
100 rows each, effective times over ten years, ~1.5 KB resource bodies) and, for
each candidate layout, appends it to a fresh Iceberg table in group-commit
windows the way ``lake.writer`` does, then times patient reads before and after
a compaction with ``lake.maintenance.compact_table``.

    .venv/bin/python bench/partitioning.py [--rows 300000] [--out bench/results/partitioning.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow as pa
import pyiceberg
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import BooleanExpression, EqualTo
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC, PartitionField, PartitionSpec
from pyiceberg.table import Table
from pyiceberg.transforms import BucketTransform, IdentityTransform

from lake.arrow import rows_to_arrow
from lake.catalog import _TABLE_PROPERTIES as LAKE_TABLE_PROPERTIES  # measure the lake's real table settings
from lake.catalog import LakeCatalog
from lake.maintenance import compact_table
from lake.rows import VersionRow
from lake.schema import JOURNAL_SEQ_PROPERTY, SCHEMA, SORT_ORDER

NAMESPACE = "bench"
TABLE = "observation"
US_PER_DAY = 86_400_000_000
SPAN_START_US = int(datetime(2015, 1, 1, tzinfo=UTC).timestamp() * 1_000_000)
SPAN_DAYS = 3652  # ten years
Loinc = tuple[str, str, str, float, float]
LOINC: list[Loinc] = [
    ("8867-4", "Heart rate", "/min", 40, 140),
    ("8480-6", "Systolic blood pressure", "mm[Hg]", 90, 180),
    ("8462-4", "Diastolic blood pressure", "mm[Hg]", 50, 110),
    ("8310-5", "Body temperature", "Cel", 35, 40),
    ("29463-7", "Body weight", "kg", 3, 150),
    ("8302-2", "Body height", "cm", 45, 200),
    ("39156-5", "Body mass index", "kg/m2", 14, 45),
    ("2339-0", "Glucose", "mg/dL", 60, 300),
    ("2093-3", "Cholesterol", "mg/dL", 120, 300),
    ("4548-4", "Hemoglobin A1c", "%", 4, 12),
    ("718-7", "Hemoglobin", "g/dL", 8, 18),
    ("2160-0", "Creatinine", "mg/dL", 0.4, 3),
    ("6690-2", "Leukocytes", "10*3/uL", 2, 20),
    ("777-3", "Platelets", "10*3/uL", 100, 450),
    ("2951-2", "Sodium", "mmol/L", 130, 150),
    ("2823-3", "Potassium", "mmol/L", 3, 6),
]
WORDS = (
    "patient",
    "reports",
    "no",
    "acute",
    "distress",
    "follow",
    "up",
    "in",
    "clinic",
    "medication",
    "reconciled",
    "vitals",
    "stable",
    "labs",
    "reviewed",
    "with",
    "patient",
    "denies",
    "chest",
    "pain",
    "shortness",
    "of",
    "breath",
    "fever",
    "chills",
    "nausea",
    "advised",
    "continue",
    "current",
    "regimen",
    "recheck",
    "next",
    "visit",
    "counseled",
    "on",
    "diet",
    "exercise",
    "sleep",
    "hydration",
)


def layouts() -> dict[str, PartitionSpec]:
    """The candidate partition specs, by label."""

    def bucket(n: int) -> PartitionField:
        return PartitionField(source_id=6, field_id=1000, transform=BucketTransform(n), name="patient_bucket")

    # Since field-level encryption only the year of a clinical date is in clear (issue 3);
    # the original month(effective) candidate is measured on the year instead.
    month = PartitionField(source_id=10, field_id=1001, transform=IdentityTransform(), name="effective_year")
    return {
        "a unpartitioned": UNPARTITIONED_PARTITION_SPEC,
        "b bucket(8, patient_key)": PartitionSpec(bucket(8)),
        "c bucket(16, patient_key)": PartitionSpec(bucket(16)),
        "d bucket(16) x year(effective)": PartitionSpec(bucket(16), month),
    }


# -- workload -------------------------------------------------------------------------------------


def _body(
    rng: random.Random, rid: str, patient: str, encounter: str, effective_us: int, obs: Loinc, value: float
) -> bytes:
    code, display, unit, low, high = obs
    when = datetime.fromtimestamp(effective_us / 1e6, tz=UTC).isoformat()
    return orjson.dumps(
        {
            "resourceType": "Observation",
            "id": rid,
            "meta": {
                "versionId": "1",
                "lastUpdated": when,
                "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-observation-lab"],
            },
            "identifier": [{"system": "urn:oid:1.2.840.114350.1.13.0.1.7.2.798268", "value": rid[:12]}],
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "laboratory",
                            "display": "Laboratory",
                        }
                    ]
                }
            ],
            "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}], "text": display},
            "subject": {"reference": f"Patient/{patient}"},
            "encounter": {"reference": f"Encounter/{encounter}"},
            "effectiveDateTime": when,
            "issued": when,
            "performer": [{"reference": f"Practitioner/{uuid.UUID(int=rng.getrandbits(128))}"}],
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
            "interpretation": [
                {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "N"}
                    ]
                }
            ],
            "referenceRange": [{"low": {"value": low, "unit": unit}, "high": {"value": high, "unit": unit}}],
            "note": [{"text": " ".join(rng.choices(WORDS, k=rng.randint(35, 55)))}],
        }
    )


def build_workload(n_rows: int, seed: int) -> tuple[list[VersionRow], Counter[str]]:
    """Rows in arrival (journal seq) order: bundles of ~10 rows per patient encounter, interleaved."""
    rng = random.Random(seed)
    n_patients = max(1, n_rows // 100)
    patients = [(f"{rng.getrandbits(128):032x}", str(uuid.UUID(int=rng.getrandbits(128)))) for _ in range(n_patients)]
    bundles: list[tuple[int, int, int]] = []  # (patient index, encounter day, rows)
    left = n_rows
    while left > 0:
        size = min(left, rng.randint(5, 15))
        bundles.append((rng.randrange(n_patients), rng.randrange(SPAN_DAYS), size))
        left -= size
    rng.shuffle(bundles)
    now_us = int(time.time() * 1_000_000)
    rows: list[VersionRow] = []
    for seq, (pi, day, size) in enumerate(bundles, start=1):
        key, pid = patients[pi]
        encounter = str(uuid.UUID(int=rng.getrandbits(128)))
        for _ in range(size):
            rid = str(uuid.UUID(int=rng.getrandbits(128)))
            effective = SPAN_START_US + day * US_PER_DAY + rng.randrange(US_PER_DAY)
            obs = rng.choice(LOINC)
            value = round(rng.uniform(obs[3], obs[4]), 1)
            body = _body(rng, rid, pid, encounter, effective, obs, value)
            rows.append(
                VersionRow(
                    "Observation",
                    rid,
                    1,
                    seq,
                    now_us + len(rows),
                    0,
                    key,
                    "final",
                    "http://loinc.org",
                    obs[0],
                    datetime.fromtimestamp(effective / 1e6, tz=UTC).year,
                    value,
                    obs[2],
                    body,
                    None,
                )
            )
    return rows, Counter(key for key, _ in (patients[b[0]] for b in bundles for _ in range(b[2])))


def windows(rows: list[VersionRow], commits: int) -> list[tuple[int, pa.Table]]:
    """Group-commit windows of whole bundles, each as the writer builds it: (journal seq high, sorted Arrow)."""
    size = -(-len(rows) // commits)
    out: list[tuple[int, pa.Table]] = []
    start = 0
    while start < len(rows):
        end = min(len(rows), start + size)
        while end < len(rows) and rows[end].seq == rows[end - 1].seq:
            end += 1
        out.append((rows[end - 1].seq, rows_to_arrow(rows[start:end])))
        start = end
    return out


# -- measurements ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Reads:
    median_ms: float
    p95_ms: float
    plan_median_ms: float
    files_planned_median: float
    files_planned_max: int
    rows_checked: int


@dataclass(slots=True)
class Files:
    count: int
    median_bytes: int
    median_rows: int
    total_bytes: int


@dataclass(slots=True)
class LayoutResult:
    layout: str
    spec: str
    rows_per_s: float
    commit_s_mean: float
    commit_s_max: float
    commits: int
    data_files_written: int
    files: Files
    reads: Reads
    compaction_s: float = 0.0
    files_compacted: Files | None = None
    reads_compacted: Reads | None = None


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def live_files(table: Table) -> Files:
    files = [t.file for t in table.scan().plan_files()]
    return Files(
        count=len(files),
        median_bytes=int(statistics.median(f.file_size_in_bytes for f in files)),
        median_rows=int(statistics.median(f.record_count for f in files)),
        total_bytes=sum(f.file_size_in_bytes for f in files),
    )


def _patient(key: str) -> BooleanExpression:
    return EqualTo("patient_key", key)  # type: ignore[call-arg, arg-type]  # pyiceberg's pydantic __init__


def patient_reads(table: Table, keys: list[str], expected: Counter[str]) -> Reads:
    """Time a full-row scan per patient key; every scan must return exactly that patient's rows."""
    table.scan(row_filter=_patient(keys[0])).to_arrow()  # warm the manifest cache
    read_ms, plan_ms, planned = [], [], []
    for key in keys:
        started = time.perf_counter()
        data = table.scan(row_filter=_patient(key)).to_arrow()
        read_ms.append((time.perf_counter() - started) * 1000)
        if data.num_rows != expected[key] or set(data.column("patient_key").to_pylist()) != {key}:
            raise AssertionError(f"patient read returned {data.num_rows} rows, expected {expected[key]}")
        started = time.perf_counter()
        planned.append(len(list(table.scan(row_filter=_patient(key)).plan_files())))
        plan_ms.append((time.perf_counter() - started) * 1000)
    return Reads(
        median_ms=round(statistics.median(read_ms), 1),
        p95_ms=round(_p95(read_ms), 1),
        plan_median_ms=round(statistics.median(plan_ms), 1),
        files_planned_median=statistics.median(planned),
        files_planned_max=max(planned),
        rows_checked=sum(expected[k] for k in keys),
    )


def append_windows(table: Table, batches: list[tuple[int, pa.Table]]) -> tuple[list[float], int]:
    """Append each window in one transaction with the journal-seq property, as ``LakeWriter`` does."""
    seconds, files = [], 0
    for high, data in batches:
        started = time.perf_counter()
        with table.transaction() as tx:
            tx.append(data, snapshot_properties={"fhirlake.journal-seq-high": str(high)})
            tx.set_properties({JOURNAL_SEQ_PROPERTY: str(high)})
        seconds.append(time.perf_counter() - started)
        summary = table.current_snapshot().summary  # type: ignore[union-attr]
        files += int((summary or {}).get("added-data-files", 0) or 0)
    return seconds, files


def run_layout(
    label: str,
    spec: PartitionSpec,
    batches: list[tuple[int, pa.Table]],
    keys: list[str],
    expected: Counter[str],
    work: Path,
    *,
    properties: dict[str, str],
    compact: bool,
) -> LayoutResult:
    catalog = SqlCatalog(
        "bench", uri=f"sqlite:///{work / 'catalog.db'}", warehouse=(work / "warehouse").resolve().as_uri()
    )
    catalog.create_namespace(NAMESPACE)
    table = catalog.create_table(
        f"{NAMESPACE}.{TABLE}",
        schema=SCHEMA,
        partition_spec=spec,
        sort_order=SORT_ORDER,
        properties=dict(properties),  # create_table pops "format-version" from the dict it is given
    )
    rows = sum(b.num_rows for _, b in batches)
    seconds, written = append_windows(table, batches)
    result = LayoutResult(
        layout=label,
        spec=str(table.spec()),
        rows_per_s=round(rows / sum(seconds)),
        commit_s_mean=round(statistics.mean(seconds), 3),
        commit_s_max=round(max(seconds), 3),
        commits=len(seconds),
        data_files_written=written,
        files=live_files(table),
        reads=patient_reads(table, keys, expected),
    )
    if compact:
        lake = LakeCatalog(catalog, NAMESPACE, buckets=0)
        started = time.perf_counter()
        compact_table(lake, TABLE, min_files=2, target_rows=10**9)
        result.compaction_s = round(time.perf_counter() - started, 2)
        table = lake.table(TABLE, fresh=True)
        result.files_compacted = live_files(table)
        result.reads_compacted = patient_reads(table, keys, expected)
    return result


# -- report ---------------------------------------------------------------------------------------


def _kb(n: int) -> str:
    return f"{n / 1024:,.0f}"


def render(results: list[LayoutResult]) -> str:
    head = (
        f"{'layout':34} {'rows/s':>8} {'commit s':>8} {'files':>6} {'med KB':>7} "
        f"{'read p50':>8} {'p95':>7} {'plan':>6} {'files/rd':>8} | {'compact s':>9} {'files':>5} "
        f"{'med KB':>7} {'read p50':>8} {'p95':>7} {'files/rd':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        line = (
            f"{r.layout:34} {r.rows_per_s:>8,.0f} {r.commit_s_mean:>8.3f} {r.files.count:>6} "
            f"{_kb(r.files.median_bytes):>7} {r.reads.median_ms:>8.1f} {r.reads.p95_ms:>7.1f} "
            f"{r.reads.plan_median_ms:>6.1f} {r.reads.files_planned_median:>8g} |"
        )
        if r.files_compacted and r.reads_compacted:
            line += (
                f" {r.compaction_s:>9.2f} {r.files_compacted.count:>5} {_kb(r.files_compacted.median_bytes):>7} "
                f"{r.reads_compacted.median_ms:>8.1f} {r.reads_compacted.p95_ms:>7.1f} "
                f"{r.reads_compacted.files_planned_median:>8g}"
            )
        lines.append(line)
    lines.append("read times in ms: scan(EqualTo(patient_key)).to_arrow(), all columns; plan = plan_files() ms")
    return "\n".join(lines)


def machine() -> dict[str, object]:
    return {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "pyiceberg": pyiceberg.__version__,
        "pyarrow": pa.__version__,
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
    }


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--commits", type=int, default=10, help="group-commit windows (rows/commits each)")
    parser.add_argument("--reads", type=int, default=50, help="patient keys to read")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", action="append", help="run only layouts whose label starts with this")
    parser.add_argument("--no-compact", action="store_true")
    parser.add_argument(
        "--row-group-rows", type=int, help="set write.parquet.row-group-limit (default: the lake's setting)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/partitioning.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    properties = dict(LAKE_TABLE_PROPERTIES)
    if args.row_group_rows:
        properties["write.parquet.row-group-limit"] = str(args.row_group_rows)
    started = time.perf_counter()
    rows, expected = build_workload(args.rows, args.seed)
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    batches = windows(rows, args.commits)
    arrow_s = time.perf_counter() - started
    body_bytes = statistics.mean(len(r.body or "") for r in rows[:5000])
    keys = random.Random(args.seed + 1).sample(sorted(expected), min(args.reads, len(expected)))
    del rows
    gc.collect()
    total = sum(b.num_rows for _, b in batches)
    load_start = round(os.getloadavg()[0], 2)
    sys.stdout.write(
        f"workload: {total:,} rows, {len(expected):,} patients, mean body {body_bytes:,.0f} B, "
        f"{len(batches)} windows; built in {build_s:.1f} s, rows_to_arrow {arrow_s:.1f} s\n"
    )
    results = []
    for label, spec in layouts().items():
        if args.only and not any(label.startswith(o) for o in args.only):
            continue
        with tempfile.TemporaryDirectory(prefix="fhirlake-bench-") as tmp:
            t0 = time.perf_counter()
            result = run_layout(
                label, spec, batches, keys, expected, Path(tmp), properties=properties, compact=not args.no_compact
            )
            results.append(result)
            sys.stdout.write(f"  {label}: {time.perf_counter() - t0:.0f} s\n")
            sys.stdout.flush()
    sys.stdout.write(render(results) + "\n")
    workload = {
        "rows": total,
        "patients": len(expected),
        "rows_per_patient_median": statistics.median(expected.values()),
        "body_bytes_mean": round(body_bytes),
        "effective_span_days": SPAN_DAYS,
        "commits": len(batches),
        "rows_per_commit": round(total / len(batches)),
        "patient_reads": len(keys),
        "seed": args.seed,
        "rows_to_arrow_s": round(arrow_s, 2),
        "table_properties": properties,
    }
    doc = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**machine(), "load_average_1m_at_start": load_start},
        "workload": workload,
        "layouts": [asdict(r) for r in results],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    sys.stdout.write(f"wrote {args.out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
