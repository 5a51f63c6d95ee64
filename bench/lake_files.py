"""Files the Iceberg scans of a patient's reads plan, per table: ``python -m bench.lake_files DATA_DIR ID,ID,…``."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from pyiceberg.expressions import And, EqualTo

from fhirlake.bootstrap import open_catalog, open_keys
from fhirlake.settings import Settings
from lake.schema import table_for
from security.keys import INDEX_SUBJECT
from security.pseudonym import Pseudonymizer


def main() -> int:
    settings = Settings(data_dir=Path(sys.argv[1]))
    patients = [p for p in sys.argv[2].split(",") if p]
    catalog = open_catalog(settings)
    pseudo = Pseudonymizer(open_keys(settings).secret(INDEX_SUBJECT), settings.tenant)
    out = {}
    for rtype in ("Patient", "Observation", "Encounter", "Condition"):
        table = catalog.table(table_for(rtype), fresh=True)
        counts = []
        for pid in patients:
            key = pseudo.patient_key(pid)
            filt = And(EqualTo("resource_type", rtype), EqualTo("patient_key", key))  # type: ignore[call-arg, arg-type]
            counts.append(len(list(table.scan(row_filter=filt).plan_files())))
        out[rtype] = {
            "table_files": len(list(table.scan().plan_files())),
            "files_per_patient_read_mean": round(statistics.fmean(counts), 2) if counts else None,
        }
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
