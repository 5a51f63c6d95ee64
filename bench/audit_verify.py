"""Audit trail benchmark: write N records through the real trail, then time ``verify``.

    .venv/bin/python bench/audit_verify.py [--records 200000] [--runs 3] [--out bench/results/audit_verify.json]

Records are realistic BALP-style read events (two agents, a patient key, a reference and a
query) built by ``audit_event``, submitted from one thread so the writer group-commits them
(fsync per batch, checkpoint every 1,000 records) into ``SegmentFileSink`` segments in a fresh
temporary directory. Then ``verify`` runs ``--runs`` times over the directory; the best run
counts (the files are in the page cache after the first). Target: >= 100,000 records/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from audit.events import AuditAction, audit_event
from audit.sinks import SegmentFileSink
from audit.trail import AuditTrail
from audit.verify import verify

TARGET_RECORDS_PER_S = 100_000.0
RESULTS = Path(__file__).resolve().parent / "results" / "audit_verify.json"


def write_trail(directory: Path, records: int, checkpoint_every: int, segment_mib: int) -> dict[str, float]:
    events = [
        audit_event(
            AuditAction.READ if i % 3 else AuditAction.SEARCH,
            client_id="emr-bench",
            user=f"Practitioner/{i % 97}",
            role="clinician",
            address="10.20.30.40",
            cert_subject="CN=emr-bench,O=Bench Hospital",
            site="bench",
            patient_keys=[f"{i % 5003:032x}"],
            resources=[f"Observation/obs-{i}"],
            query="/Observation?patient=&code=",
            purpose_of_use=["TREAT"],
            request_id=f"req-{i}",
        )
        for i in range(min(records, 1000))
    ]
    trail = AuditTrail(
        SegmentFileSink(directory, segment_bytes=segment_mib << 20), os.urandom(32), checkpoint_every=checkpoint_every
    )
    start = time.perf_counter()
    futures = [trail.submit(events[i % len(events)]) for i in range(records)]
    for future in futures:
        future.result()
    trail.close()
    elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "records_per_s": records / elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--checkpoint-every", type=int, default=1000)
    parser.add_argument("--segment-mib", type=int, default=64)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fhirlake-audit-bench-") as tmp:
        directory = Path(tmp) / "audit"
        write = write_trail(directory, args.records, args.checkpoint_every, args.segment_mib)
        size = sum(p.stat().st_size for p in directory.iterdir())
        runs = []
        for _ in range(args.runs):
            start = time.perf_counter()
            report = verify(directory)
            runs.append(time.perf_counter() - start)
            if not report.ok or report.records != args.records:
                print(f"verify failed: {report}")
                return 1
    best = min(runs)
    result = {
        "records": args.records,
        "checkpoints": report.checkpoints,
        "segments": report.segments,
        "bytes": size,
        "bytes_per_record": round(size / args.records, 1),
        "write": {k: round(v, 3) for k, v in write.items()},
        "verify": {
            "runs_s": [round(r, 4) for r in runs],
            "best_s": round(best, 4),
            "records_per_s": round(args.records / best),
            "mib_per_s": round(size / best / (1 << 20), 1),
        },
        "target_records_per_s": TARGET_RECORDS_PER_S,
        "target_met": args.records / best >= TARGET_RECORDS_PER_S,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "utc": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"wrote {args.records:,} records in {write['seconds']:.2f} s ({write['records_per_s']:,.0f}/s); "
        f"verify best {best:.3f} s = {args.records / best:,.0f} records/s "
        f"({result['verify']['mib_per_s']} MiB/s, target {TARGET_RECORDS_PER_S:,.0f}) -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
