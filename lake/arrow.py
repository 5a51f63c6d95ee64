"""Version rows to Arrow, in the lake schema, sorted for patient reads."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from lake.rows import VersionRow
from lake.schema import SCHEMA

ARROW_SCHEMA: pa.Schema = SCHEMA.as_arrow()


def rows_to_arrow(rows: list[VersionRow]) -> pa.Table:
    cols = list(zip(*rows, strict=True)) if rows else [()] * 14
    ts = pa.timestamp("us", tz="UTC")
    arrays = [
        pa.array(cols[0], pa.string()),
        pa.array(cols[1], pa.string()),
        pa.array(cols[2], pa.int64()),
        pa.array(cols[4], pa.int64()).cast(ts),
        pa.array([bool(d) for d in cols[5]], pa.bool_()),
        pa.array(cols[6], pa.string()),
        pa.array(cols[7], pa.string()),
        pa.array(cols[8], pa.string()),
        pa.array(cols[9], pa.string()),
        pa.array(cols[10], pa.int64()).cast(ts),
        pa.array(cols[11], pa.float64()),
        pa.array(cols[12], pa.string()),
        pa.array(cols[3], pa.int64()),
        # bytes straight into Arrow, validated as UTF-8 by the cast: no Python str per body
        pa.array(cols[13], pa.binary()).cast(pa.string()),
    ]
    table = pa.Table.from_arrays(
        [a.cast(f.type) for a, f in zip(arrays, ARROW_SCHEMA, strict=True)], schema=ARROW_SCHEMA
    )
    return sort_for_patients(table)


def sort_for_patients(table: pa.Table) -> pa.Table:
    if table.num_rows < 2:
        return table
    order = pc.sort_indices(table, sort_keys=[("patient_key", "ascending"), ("effective", "ascending")])
    return table.take(order)
