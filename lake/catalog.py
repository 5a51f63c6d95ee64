"""The Iceberg catalog of the embedded default: ``SqlCatalog`` on SQLite, local warehouse."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError, TableAlreadyExistsError
from pyiceberg.table import Table

from lake.errors import LakeSchemaError
from lake.guard import LakeGuard
from lake.schema import SCHEMA, SORT_ORDER, all_tables, partition_spec

_TABLE_PROPERTIES = {
    "write.parquet.compression-codec": "zstd",
    "write.target-file-size-bytes": str(256 * 1024 * 1024),
    # Small row groups let a patient read decode little more than its rows: sealed bodies do not
    # compress, so a row group of the resource column costs ~1.5 KB per row to read (docs/lake.md).
    "write.parquet.row-group-limit": "1024",
    # The writer retries conflicts itself, re-reading fhirlake.journal-seq first (exactly once);
    # pyiceberg's own retry would re-append blindly.
    "commit.retry.num-retries": "0",
    # Compaction must commit while the writer appends new files.
    "write.delete.isolation-level": "snapshot",
    # Bounds of ciphertext say nothing and only grow the manifests.
    "write.metadata.metrics.column.resource": "none",
    "write.metadata.metrics.column.phi": "none",
}


class LakeCatalog:
    """Owns the catalog connection and a cache of loaded tables."""

    def __init__(self, catalog: Catalog, namespace: str, buckets: int, guard: LakeGuard | None = None) -> None:
        self.catalog = catalog
        self.guard = guard or LakeGuard()  # breakers of the catalog and object storage
        self.namespace = namespace
        self._buckets = buckets
        self._tables: dict[str, Table] = {}
        self._lock = threading.Lock()

    @classmethod
    def embedded(
        cls,
        lake_dir: Path,
        namespace: str = "fhir",
        buckets: int = 8,
        *,
        warehouse: str | None = None,
        io_properties: dict[str, str] | None = None,
        guard: LakeGuard | None = None,
        catalog_url: str | None = None,
    ) -> LakeCatalog:
        """The SQLite catalog under ``lake_dir`` (or the SQL database ``catalog_url``, e.g.
        PostgreSQL, shared by every process of a region); the warehouse is ``lake_dir/warehouse``
        unless ``warehouse`` names another location (``s3://bucket/prefix`` with ``io_properties``
        such as ``s3.endpoint``: a region's bucket, see docs/dr.md)."""
        if warehouse is None:
            local = lake_dir / "warehouse"
            local.mkdir(parents=True, exist_ok=True)
            warehouse = local.resolve().as_uri()
        lake_dir.mkdir(parents=True, exist_ok=True)
        catalog = SqlCatalog(
            "fhirlake",
            uri=catalog_url or f"sqlite:///{lake_dir / 'catalog.db'}",
            warehouse=warehouse,
            **(io_properties or {}),
        )
        return cls(catalog, namespace, buckets, guard)

    def ensure_tables(self) -> None:
        """Create the namespace and every table that does not exist yet."""
        with contextlib.suppress(NamespaceAlreadyExistsError):
            self.catalog.create_namespace(self.namespace)
        for name in all_tables():
            ident = f"{self.namespace}.{name}"
            try:
                self.catalog.create_table(
                    ident,
                    schema=SCHEMA,
                    partition_spec=partition_spec(self._buckets),
                    sort_order=SORT_ORDER,
                    properties={**_TABLE_PROPERTIES, "format-version": "2"},
                )
            except TableAlreadyExistsError:
                self._check_schema(name)
                self._upgrade_properties(name)

    def _check_schema(self, name: str) -> None:
        """Refuse tables of a release that stored resources unsealed (they cannot be upgraded in place)."""
        fields = {f.name: f for f in self.table(name, fresh=True).schema().fields}
        if "phi" not in fields or "effective" in fields:
            raise LakeSchemaError(
                f"table {name} was written by an older release without field-level encryption; "
                "start from a new data dir and re-ingest"
            )

    def _upgrade_properties(self, name: str) -> None:
        """Bring a table created by an older release to the current properties."""
        table = self.table(name, fresh=True)
        missing = {k: v for k, v in _TABLE_PROPERTIES.items() if table.properties.get(k) != v}
        if missing:
            with table.transaction() as tx:
                tx.set_properties(missing)

    def table(self, name: str, *, fresh: bool = False) -> Table:
        """The table ``name``, from cache unless ``fresh``.

        Raises NoSuchTableError, LakeUnavailableError or CircuitOpenError (catalog or storage down).
        """
        with self._lock:
            cached = self._tables.get(name)
        if cached is not None and not fresh:
            return cached
        ident = f"{self.namespace}.{name}"
        table = self.guard.read(lambda: self.catalog.load_table(ident), "catalog.load_table", catalog=True)
        with self._lock:
            self._tables[name] = table
        return table

    def remember(self, name: str, table: Table) -> None:
        """Cache the table state a commit just produced."""
        with self._lock:
            self._tables[name] = table

    def has_table(self, name: str) -> bool:
        try:
            self.table(name)
        except NoSuchTableError:
            return False
        return True
