"""Copies of Iceberg table states into another warehouse: the lake half of DR replication.

A table state is one ``metadata.json`` and everything it references: per snapshot a manifest
list, its manifests, and their data and delete files. Iceberg writes absolute paths into each of
these, so a copy in another region's warehouse must have them rewritten (what Iceberg calls
*rewriting table paths*):

* data files and equality-delete files are copied byte for byte under the same relative path;
* position-delete files name data files inside, so their ``file_path`` column is rewritten;
* manifests and manifest lists are Avro files: every record is read with the file's own schema
  and written back with the one path (and, for rewritten delete files, the size) replaced, so
  sequence numbers, snapshot ids, statistics and partition summaries stay exactly as they were;
* ``metadata.json`` gets the new table location and manifest-list paths; its metadata log and
  statistics files (which would point back into the source) are dropped.

Files go in that order, so a metadata file is written only after everything it references. The
catalog pointer is *not* moved here: the caller advances it in one atomic step (``dr.replicate``).
A :class:`CopyLedger` remembers what was copied, so a restarted copy skips it.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.io import FileIO, load_file_io
from pyiceberg.table import StaticTable
from pyiceberg.typedef import Record

from lake.avro_records import field_pos, optional_pos, read_records, write_records
from lake.errors import LakeError

DIGEST_MOD = 1 << 128
# Field ids of the Iceberg spec (manifest list: manifest_path, manifest_length; manifest entry:
# data_file; data file: content, file_path, file_size_in_bytes).
_MANIFEST_PATH, _MANIFEST_LENGTH = 500, 501
_DATA_FILE, _CONTENT, _FILE_PATH, _FILE_SIZE = 2, 134, 100, 104
_LOWER_BOUNDS, _UPPER_BOUNDS, _REFERENCED_FILE = 125, 128, 143
_POSITION_DELETES = 1
_DELETE_PATH_ID = 2147483546  # the file_path column of a position-delete file


class ReplicaError(LakeError):
    code = "lake-replica"


@dataclass(frozen=True, slots=True)
class CopiedFile:
    """One file copied into the destination: where from, where to, its bytes and (data) content."""

    source: str
    dest: str
    kind: str  # data | delete | manifest | manifest-list | metadata
    size: int
    sha256: str
    rows: int | None = None
    digest: str | None = None  # content digest of a data file (``rows_digest``)


class CopyLedger(Protocol):
    """Where a copier records what it copied (durably, before it moves on)."""

    def copied(self, source: str) -> CopiedFile | None: ...

    def record(self, copy: CopiedFile) -> None: ...


@dataclass(frozen=True, slots=True)
class TableCopy:
    """The destination state of one table after a copy."""

    metadata_location: str
    snapshot_id: int | None
    sequence_number: int
    timestamp_ms: int | None
    rows: int
    digest: str
    files_copied: int
    bytes_copied: int
    journal_seq: int


def file_io(location: str, properties: dict[str, str] | None = None) -> FileIO:
    """The FileIO for ``location`` (a warehouse URI) with the region's IO properties."""
    return load_file_io(dict(properties or {}), location)


def rows_digest(table: pa.Table) -> tuple[int, int]:
    """``(rows, digest)``: an order-independent sum of one SHA-256 per row, over every column.

    Sums compose: a table's digest is the sum over its live data files, whatever their order.
    """
    names = sorted(table.column_names)
    columns = []
    for name in names:
        column = table.column(name)
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.int64())
        columns.append(column.to_pylist())
    total = 0
    for row in zip(*columns, strict=True):
        total += int.from_bytes(hashlib.sha256(repr(row).encode()).digest()[:16], "big")
    return table.num_rows, total % DIGEST_MOD


def read_bytes(fio: FileIO, path: str) -> bytes:
    with fio.new_input(path).open() as stream:
        return stream.read()


def _write_bytes(fio: FileIO, path: str, data: bytes) -> None:
    with fio.new_output(path).create(overwrite=True) as out:
        out.write(data)


class SnapshotCopier:
    """Copies table states from a source warehouse location to a destination one."""

    def __init__(self, src: FileIO, dst: FileIO, src_root: str, dst_root: str, ledger: CopyLedger) -> None:
        self._src, self._dst, self._ledger = src, dst, ledger
        self._src_root, self._dst_root = src_root.rstrip("/"), dst_root.rstrip("/")
        self.files_copied = 0
        self.bytes_copied = 0
        self.files_skipped = 0

    def dest_path(self, path: str) -> str:
        """Where ``path`` of the source warehouse lives in the destination. Raises ReplicaError."""
        if not path.startswith(self._src_root + "/"):
            raise ReplicaError("a table file lies outside the source warehouse")
        return self._dst_root + path[len(self._src_root) :]

    def copy_table(self, metadata_location: str) -> TableCopy:
        """Copy the table state ``metadata_location`` and everything it references; return the new state.

        Raises ReplicaError for a state this copier cannot rewrite, OSError for storage failures.
        """
        files_before, bytes_before = self.files_copied, self.bytes_copied
        doc = json.loads(read_bytes(self._src, metadata_location))
        lists = [s["manifest-list"] for s in doc.get("snapshots", [])]
        list_sizes: dict[str, int] = {}
        for list_path in lists:
            list_sizes[list_path] = self._copy_manifest_list(list_path)
        dest = self._copy_metadata(metadata_location, doc)
        current = _current(doc)
        rows, digest = self.expected_digest(metadata_location, doc)
        return TableCopy(
            metadata_location=dest,
            snapshot_id=None if current is None else int(current["snapshot-id"]),
            sequence_number=0 if current is None else int(current.get("sequence-number", 0)),
            timestamp_ms=None if current is None else int(current["timestamp-ms"]),
            rows=rows,
            digest=f"{digest:032x}",
            files_copied=self.files_copied - files_before,
            bytes_copied=self.bytes_copied - bytes_before,
            journal_seq=int(doc.get("properties", {}).get("fhirlake.journal-seq", "0")),
        )

    def expected_digest(self, metadata_location: str, doc: dict[str, Any]) -> tuple[int, int]:
        """Rows and content digest of the current snapshot, from the digests of its copied data files."""
        rows = total = 0
        deletes = False
        for path, content in live_files(self._src, doc):
            copied = self._ledger.copied(path)
            if copied is None:
                raise ReplicaError("a live file was not copied")
            if content != 0:
                deletes = True
                continue
            if copied.digest is None or copied.rows is None:
                raise ReplicaError("a live data file was copied without its digest")
            rows += copied.rows
            total += int(copied.digest, 16)
        if deletes:  # per-file digests count deleted rows: digest what a reader sees instead
            return snapshot_digest(self._src, metadata_location)
        return rows, total % DIGEST_MOD

    # -- per kind ------------------------------------------------------------------------------

    def _copy_manifest_list(self, path: str) -> int:
        known = self._ledger.copied(path)
        if known is not None:
            self.files_skipped += 1
            return known.size
        records, schema, meta = read_records(self._src, path)
        path_pos, length_pos = field_pos(schema, _MANIFEST_PATH), field_pos(schema, _MANIFEST_LENGTH)
        for record in records:
            manifest = str(record[path_pos])
            record[length_pos] = self._copy_manifest(manifest)
            record[path_pos] = self.dest_path(manifest)
        return self._write_avro(path, "manifest-list", records, schema, meta, "manifest_file")

    def _copy_manifest(self, path: str) -> int:
        known = self._ledger.copied(path)
        if known is not None:
            self.files_skipped += 1
            return known.size
        records, schema, meta = read_records(self._src, path)
        data_pos = field_pos(schema, _DATA_FILE)
        struct = schema.fields[data_pos].field_type
        path_pos, size_pos = field_pos(struct, _FILE_PATH), field_pos(struct, _FILE_SIZE)
        content_pos = field_pos(struct, _CONTENT)
        for record in records:
            data_file = record[data_pos]
            source, content = str(data_file[path_pos]), int(data_file[content_pos] or 0)
            data_file[size_pos] = self._copy_data_file(source, content)
            data_file[path_pos] = self.dest_path(source)
            if content == _POSITION_DELETES:
                self._rewrite_delete_refs(struct, data_file)
        return self._write_avro(path, "manifest", records, schema, meta, "manifest_entry")

    def _copy_data_file(self, path: str, content: int) -> int:
        known = self._ledger.copied(path)
        if known is not None:
            self.files_skipped += 1
            return known.size
        data = read_bytes(self._src, path)
        rows = digest = None
        if content == _POSITION_DELETES:
            data = self._rewrite_position_deletes(data)
        elif content == 0:
            n, total = file_digest(data)
            rows, digest = n, f"{total:032x}"
        kind = "data" if content == 0 else "delete"
        self._store(CopiedFile(path, self.dest_path(path), kind, len(data), sha256_hex(data), rows, digest), data)
        return len(data)

    def _rewrite_delete_refs(self, struct: Any, data_file: Record) -> None:
        """A position-delete entry names its data file in path bounds (and in v3 a field): point them here.

        Readers index a delete file by those bounds; left on the source's paths, the copy's deletes
        would silently apply to nothing.
        """
        for field_id in (_LOWER_BOUNDS, _UPPER_BOUNDS):
            pos = optional_pos(struct, field_id)
            bounds = None if pos is None else data_file[pos]
            if bounds and _DELETE_PATH_ID in bounds:
                bounds[_DELETE_PATH_ID] = self.dest_path(bytes(bounds[_DELETE_PATH_ID]).decode()).encode()
        pos = optional_pos(struct, _REFERENCED_FILE)
        if pos is not None and data_file[pos] is not None:
            data_file[pos] = self.dest_path(str(data_file[pos]))

    def _rewrite_position_deletes(self, data: bytes) -> bytes:
        table = pq.read_table(io.BytesIO(data))
        paths = [self.dest_path(p) for p in table.column("file_path").to_pylist()]
        index = table.column_names.index("file_path")
        table = table.set_column(index, table.schema.field(index), pa.array(paths, table.column(index).type))
        out = io.BytesIO()
        pq.write_table(table, out)
        return out.getvalue()

    def _copy_metadata(self, path: str, doc: dict[str, Any]) -> str:
        dest = self.dest_path(path)
        known = self._ledger.copied(path)
        if known is not None:
            self.files_skipped += 1
            return known.dest
        doc = dict(doc)
        doc["location"] = self.dest_path(doc["location"])
        doc["snapshots"] = [
            {**s, "manifest-list": self.dest_path(s["manifest-list"])} for s in doc.get("snapshots", [])
        ]
        doc["metadata-log"] = []
        doc["statistics"] = []
        doc["partition-statistics"] = []
        data = json.dumps(doc, indent=None, separators=(",", ":")).encode()
        self._store(CopiedFile(path, dest, "metadata", len(data), sha256_hex(data)), data)
        return dest

    # -- io ------------------------------------------------------------------------------------

    def _write_avro(
        self, source: str, kind: str, records: list[Record], schema: Any, meta: dict[str, str], name: str
    ) -> int:
        data = write_records(records, schema, meta, name)
        self._store(CopiedFile(source, self.dest_path(source), kind, len(data), sha256_hex(data)), data)
        return len(data)

    def _store(self, copy: CopiedFile, data: bytes) -> None:
        if self._same_in_dest(copy):  # written before a crash, or the file came from there (failback)
            self._ledger.record(copy)
            self.files_skipped += 1
            return
        _write_bytes(self._dst, copy.dest, data)
        self._ledger.record(copy)
        self.files_copied += 1
        self.bytes_copied += len(data)

    def _same_in_dest(self, copy: CopiedFile) -> bool:
        if copy.kind in ("manifest", "manifest-list"):
            return False  # rewritten Avro differs byte for byte on every write (random sync marker)
        target = self._dst.new_input(copy.dest)
        if not target.exists() or len(target) != copy.size:
            return False
        return sha256_hex(read_bytes(self._dst, copy.dest)) == copy.sha256


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _current(doc: dict[str, Any]) -> dict[str, Any] | None:
    current = doc.get("current-snapshot-id")
    for snapshot in doc.get("snapshots", []):
        if snapshot["snapshot-id"] == current:
            return dict(snapshot)
    return None


def _snapshot(doc: dict[str, Any], snapshot_id: int) -> dict[str, Any]:
    for snapshot in doc.get("snapshots", []):
        if snapshot["snapshot-id"] == snapshot_id:
            return dict(snapshot)
    raise ReplicaError(f"snapshot {snapshot_id} is not in the table metadata")


def snapshot_digest(fio: FileIO, metadata_location: str, snapshot_id: int | None = None) -> tuple[int, int]:
    """``(rows, digest)`` of a snapshot as a reader sees it, delete files applied (reads every live file)."""
    table = StaticTable.from_metadata(metadata_location, properties=fio.properties)
    return rows_digest(table.scan(snapshot_id=snapshot_id).to_arrow())


def file_digest(data: bytes) -> tuple[int, int]:
    """``(rows, digest)`` of a Parquet data file's bytes (see :func:`rows_digest`)."""
    return rows_digest(pq.read_table(io.BytesIO(data)))


def live_files(fio: FileIO, doc: dict[str, Any], snapshot_id: int | None = None) -> Iterator[tuple[str, int]]:
    """``(path, content)`` of every live data and delete file of a snapshot (default: the current one).

    Raises ReplicaError when the snapshot is not in the table's metadata.
    """
    current = _current(doc) if snapshot_id is None else _snapshot(doc, snapshot_id)
    if current is None:
        return
    lists, _, _ = read_records(fio, current["manifest-list"])
    for manifest in lists:
        m_path = manifest[0]
        entries, schema, _ = read_records(fio, str(m_path))
        data_pos = field_pos(schema, _DATA_FILE)
        struct = schema.fields[data_pos].field_type
        path_pos, content_pos = field_pos(struct, _FILE_PATH), field_pos(struct, _CONTENT)
        status_pos = 0
        for entry in entries:
            if int(entry[status_pos]) == 2:  # DELETED
                continue
            yield str(entry[data_pos][path_pos]), int(entry[data_pos][content_pos] or 0)


def metadata_doc(fio: FileIO, metadata_location: str) -> dict[str, Any]:
    """The parsed ``metadata.json`` at ``metadata_location``."""
    doc: dict[str, Any] = json.loads(read_bytes(fio, metadata_location))
    return doc


def snapshots_after(doc: dict[str, Any], sequence_number: int) -> list[dict[str, Any]]:
    """Snapshots of the table with a sequence number above ``sequence_number``, oldest first."""
    found = [s for s in doc.get("snapshots", []) if int(s.get("sequence-number", 0)) > sequence_number]
    return sorted(found, key=lambda s: int(s.get("sequence-number", 0)))
