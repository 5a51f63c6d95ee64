"""Avro files of Iceberg metadata (manifests, manifest lists) as plain records, for path rewriting.

A file is read with its own schema and written back with the same schema and header metadata, so
every field the copier does not touch keeps its exact value. Fields are found by Iceberg field id.
"""

from __future__ import annotations

import io
from typing import Any

from pyiceberg.avro.file import AvroFile, AvroOutputFile
from pyiceberg.io import FileIO
from pyiceberg.typedef import Record

from lake.errors import LakeDataError


def read_records(fio: FileIO, path: str) -> tuple[list[Record], Any, dict[str, str]]:
    """``(records, schema, header metadata)`` of the Avro file at ``path``."""
    with AvroFile[Record](fio.new_input(path)) as reader:
        records = list(reader)
        schema = reader.schema
        meta = {k: v for k, v in reader.header.meta.items() if k not in ("avro.schema", "avro.codec")}
        meta["avro.codec"] = reader.header.meta.get("avro.codec", "null")
    return records, schema, meta


def write_records(records: list[Record], schema: Any, meta: dict[str, str], name: str) -> bytes:
    """The bytes of an Avro file holding ``records`` under ``schema`` (record name ``name``)."""
    out = io.BytesIO()
    with AvroOutputFile[Record](_MemoryOutput(out), schema, name, metadata=meta) as writer:  # type: ignore[arg-type]
        writer.write_block(records)
    return out.getvalue()


def field_pos(schema: Any, field_id: int) -> int:
    """Position of the field ``field_id`` in a struct schema. Raises LakeDataError when absent."""
    pos = optional_pos(schema, field_id)
    if pos is None:
        raise LakeDataError(f"an Avro file of the table has no field {field_id}")
    return pos


def optional_pos(schema: Any, field_id: int) -> int | None:
    """Position of the field ``field_id`` in a struct schema, None when the schema lacks it."""
    for pos, field in enumerate(schema.fields):
        if field.field_id == field_id:
            return pos
    return None


class _MemoryOutput:
    """An OutputFile writing into a BytesIO (the copier stores the bytes itself)."""

    def __init__(self, buffer: io.BytesIO) -> None:
        self._buffer = buffer

    def create(self, overwrite: bool = False) -> _Unclosable:
        return _Unclosable(self._buffer)


class _Unclosable:
    def __init__(self, buffer: io.BytesIO) -> None:
        self._buffer = buffer

    def write(self, data: bytes) -> int:
        return self._buffer.write(data)

    def tell(self) -> int:
        return self._buffer.tell()

    def close(self) -> None:
        pass
