"""One settings object per process, composed of per-package sections.

Every value can be set through the environment with the ``FHIRLAKE_`` prefix
and ``__`` between section and field, e.g. ``FHIRLAKE_LIMITS__MAX_ENTRIES=500``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from security.config import AuthSettings, SecuritySettings, TlsSettings


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8080
    base_url: str | None = Field(
        default=None, description="Public base URL of the FHIR endpoint; derived from the request if unset."
    )


class LimitSettings(BaseModel):
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    max_depth: int = Field(default=64, ge=8, le=512)
    max_entries: int = Field(default=10_000, ge=1)
    max_count: int = Field(default=1000, ge=1, description="Largest _count a search may ask for.")
    client_rate_per_s: float = Field(default=200.0, gt=0, description="Requests per second one client may sustain.")
    client_burst: int = Field(default=400, ge=1, description="Requests one client may send at once above its rate.")
    client_in_flight: int = Field(default=32, ge=1, description="Concurrent requests of one client.")
    max_in_flight: int = Field(default=256, ge=1, description="Concurrent requests in all; past it, 503 (shedding).")
    max_rss_mb: float | None = Field(
        default=None, gt=0, description="Resident memory of the process past which new requests get 503 (shedding)."
    )
    request_timeout_s: float = Field(
        default=30.0, gt=0, description="Deadline of one request, passed to every dependency call it makes."
    )


class IngestSettings(BaseModel):
    validation_workers: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1), ge=0)
    group_commit_max_wait_ms: float = Field(default=2.0, ge=0)
    idempotency_ttl_hours: int = Field(default=72, ge=1)


class LakeSettings(BaseModel):
    namespace: str = "fhir"
    catalog_url: SecretStr | None = Field(
        default=None,
        description="Iceberg SqlCatalog database of the primary region, e.g. postgresql+psycopg://user@host/db "
        "(default: SQLite <data-dir>/lake/catalog.db); per region: dr.regions.<name>.catalog_url.",
    )
    commit_interval_s: float = Field(
        default=15.0, gt=0, description="Longest time an accepted row waits before its Iceberg commit."
    )
    commit_min_rows: int = Field(default=50_000, ge=1, description="Commit earlier once this many rows wait.")
    max_batch_rows: int = Field(default=50_000, ge=1)
    patient_buckets: int = Field(default=8, ge=1, le=1024)
    hot_retention_s: float = Field(
        default=3600.0,
        ge=0,
        description="How long resource bodies stay in the journal after they reached the lake.",
    )
    snapshot_retention_s: float = Field(default=7 * 24 * 3600.0, ge=0)
    breaker_failures: int = Field(
        default=3, ge=1, description="Failed catalog or object-storage calls in a row that open its breaker."
    )
    breaker_open_s: float = Field(default=5.0, gt=0, description="How long an open lake breaker fails fast.")
    writer_in_gateway: bool = Field(
        default=True,
        description="The gateway commits to Iceberg itself; false when a separate `fhirlake writer` process does.",
    )
    compact_min_files: int = Field(default=4, ge=2)
    target_file_rows: int = Field(default=1_000_000, ge=1000)


class AuditSettings(BaseModel):
    enabled: bool = Field(default=True, description="Off only for the benchmark's comparison run.")
    checkpoint_every: int = Field(default=1000, ge=1, description="Signed checkpoint after this many records.")
    checkpoint_interval_s: float = Field(default=60.0, gt=0, description="…or after this long with unsealed ones.")
    fsync: Literal["always", "data"] = Field(default="always", description="fsync or fdatasync per group.")
    retention_days: int = Field(default=6 * 365, ge=6 * 365, description="HIPAA 164.316: at least six years.")
    worm_bucket: str | None = Field(
        default=None, description="S3 bucket (versioning + Object Lock, compliance mode) for a WORM copy."
    )
    worm_prefix: str = "audit"
    mirror_interval_s: float = Field(default=5.0, gt=0, description="How often audit records are copied to Iceberg.")
    worm_region: str = "us-east-1"
    worm_endpoint_url: str | None = None


class RegionSettings(BaseModel):
    """One region: a root directory (catalog, journal, key store, audit) and a warehouse."""

    root: Path | None = Field(
        default=None,
        description="State directory of the region; default: the data dir (primary), <data-dir>/regions/<name>.",
    )
    warehouse: str | None = Field(
        default=None, description="Iceberg warehouse URI, e.g. s3://bucket/warehouse; default <root>/lake/warehouse."
    )
    s3_endpoint: str | None = Field(default=None, description="S3 endpoint override of the warehouse (tests, VPC).")
    catalog_url: SecretStr | None = Field(
        default=None,
        description="SQL database of the region's Iceberg catalog (postgresql+psycopg://…); default SQLite under root.",
    )
    s3_region: str = "us-east-1"


class DrSettings(BaseModel):
    """Disaster recovery: the two regions, replication cadence and the drill's targets."""

    primary: str = Field(default="primary", description="Name of the region that is primary by design.")
    secondary: str = Field(default="secondary", description="Name of the region replicated to.")
    regions: dict[str, RegionSettings] = Field(default_factory=dict)
    follow_interval_s: float = Field(default=5.0, gt=0, description="Pause between rounds of `dr replicate --follow`.")
    rpo_target_s: float = Field(
        default=60.0, gt=0, description="Drill target: most seconds of acknowledged writes lost."
    )
    rto_target_s: float = Field(default=300.0, gt=0, description="Drill target: longest time to serve again.")
    drill_writers: int = Field(default=2, ge=1, le=16, description="Concurrent canary writers during a drill.")
    drill_load_s: float = Field(default=4.0, gt=0, description="How long the drill writes before the primary is lost.")


class ObservabilitySettings(BaseModel):
    traces: Literal["none", "otlp"] = Field(default="none", description="OpenTelemetry trace export.")
    otlp_endpoint: str | None = Field(default=None, description="OTLP/HTTP traces URL (default: the SDK's).")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FHIRLAKE_", env_nested_delimiter="__", extra="ignore")

    data_dir: Path = Path("./fhirlake-data")
    tenant: str = "default"
    log_level: str = "info"
    log_json: bool = True
    server: ServerSettings = ServerSettings()
    limits: LimitSettings = LimitSettings()
    ingest: IngestSettings = IngestSettings()
    lake: LakeSettings = LakeSettings()
    security: SecuritySettings = SecuritySettings()
    tls: TlsSettings = TlsSettings()
    auth: AuthSettings = AuthSettings()
    audit: AuditSettings = AuditSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    dr: DrSettings = DrSettings()
