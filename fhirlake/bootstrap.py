"""The composition root: settings in, wired objects out. Nothing is built at import time."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from audit.errors import AuditConfigError
from audit.mirror import AuditMirror
from audit.segments import SegmentFileSink
from audit.sinks import AuditSink
from audit.trail import AuditTrail
from audit.worm import WormSink
from dr.errors import RegionFencedError
from dr.region import RegionGuard, active_region, trail_prefix
from fhirlake.settings import Settings
from fhirlake.tls_serve import tls_files
from ingest.auditing import AuditQueries, AuditRecorder, NullTrail, Trail
from ingest.auth import AuthService
from ingest.emr_ingest import EmrIngest, build_emr
from ingest.erasure import PatientErasure
from ingest.export import BulkExports
from ingest.fhir_types import supported_types
from ingest.journal import Journal
from ingest.prepared import Limits
from ingest.reads import ResourceReads
from ingest.service import IngestService
from ingest.transaction import TransactionApplier
from ingest.validation import Validator
from lake.audit_table import AuditTable
from lake.catalog import LakeCatalog
from lake.guard import LakeGuard
from lake.reader import LakeReader
from lake.writer import LakeWriter, StandbyLakeWriter
from resilience import BreakerPolicy, Breakers
from security.authz import Authorizer, database_enforcer
from security.breakglass import BreakGlassLedger
from security.clients import ClientRegistry
from security.errors import KeyStoreError
from security.keys import INDEX_SUBJECT, CachePolicy, DataKeys
from security.keystore import KeyStore
from security.kms import load_provider
from security.oauth import AuthorizationServer
from security.pseudonym import Pseudonymizer
from security.sealing import FieldSealer, PlaintextSealer, RowSealer

log = structlog.get_logger("fhirlake.bootstrap")


@dataclass(frozen=True, slots=True)
class Paths:
    root: Path

    @property
    def journal(self) -> Path:
        return self.root / "journal" / "journal.db"

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def keystore(self) -> Path:
        return self.root / "keys" / "keystore.db"

    @property
    def auth(self) -> Path:
        return self.root / "auth"

    @property
    def audit(self) -> Path:
        return self.root / "audit"


def region_root(settings: Settings) -> Path:
    """The state directory of the active DR region (the data dir itself unless failed over)."""
    return active_region(settings).root


def open_catalog(settings: Settings) -> LakeCatalog:
    region = active_region(settings)
    catalog = LakeCatalog.embedded(
        Paths(region.root).lake,
        settings.lake.namespace,
        settings.lake.patient_buckets,
        warehouse=region.warehouse,
        io_properties=region.io_properties,
        catalog_url=region.catalog_url,
        guard=LakeGuard(BreakerPolicy(settings.lake.breaker_failures, settings.lake.breaker_open_s, slow_call_s=30.0)),
    )
    catalog.ensure_tables()
    return catalog


@dataclass
class Container:
    settings: Settings
    journal: Journal
    catalog: LakeCatalog
    lake_writer: LakeWriter
    lake_reader: LakeReader
    validator: Validator
    reads: ResourceReads
    service: IngestService
    keys: DataKeys
    erasure: PatientErasure
    auth: AuthService
    auditing: AuditRecorder
    audit_queries: AuditQueries
    audit_mirror: AuditMirror
    exports: BulkExports
    sealer: RowSealer
    region_guard: RegionGuard | None = None
    emr: EmrIngest | None = None  # EMR adapters, raw zone, dead letters, enterprise patient index
    breakers: Breakers = field(default_factory=Breakers)  # kms, catalog, object_storage, audit_worm
    worm: WormSink | None = None  # the WORM audit copy, if configured

    def start(self) -> None:
        # Import every supported R4B model now (~1.5 s), not inside the first request.
        supported_types()
        self.lake_writer.start()
        self.audit_mirror.start()

    def metrics_text(self) -> str:
        from fhirlake.metrics import metrics_text

        return metrics_text(self)

    def breaker_states(self) -> dict[str, str]:
        """Circuit breaker state per dependency: closed, half_open or open."""
        return {name: state.value for name, state in self.breakers.states().items()}

    def readiness(self) -> dict[str, Any]:
        """The ``/readyz`` report: ready, degraded or not-ready, per dependency (fhirlake.readiness)."""
        from fhirlake.readiness import readiness

        return readiness(self)

    def ready(self) -> bool:
        """Whether the load balancer should send traffic here (ready or degraded)."""
        return bool(self.readiness()["status"] != "not-ready")

    def fenced(self) -> bool:
        """A region fenced by a failover is not ready: load balancers stop sending it traffic."""
        if self.region_guard is None:
            return False
        try:
            self.region_guard.check()
        except RegionFencedError:
            return True
        return False

    def close(self) -> None:
        """Stop accepting, write everything accepted to the lake, release resources."""
        self.validator.close()
        self.exports.close()
        if self.emr is not None:
            self.emr.close()
        self.lake_writer.stop(drain=True)
        self.journal.close()
        self.auth.close()
        self.auditing.close()  # a final signed checkpoint
        self.audit_mirror.stop()
        self.audit_mirror.catch_up()  # the last records, checkpoint included, reach the Iceberg copy
        self.keys.store.close()


def open_keys(settings: Settings) -> DataKeys:
    """The tenant's data keys: KMS provider plus the key store under ``<data-dir>/keys``."""
    paths = Paths(region_root(settings))
    sec = settings.security
    policy = CachePolicy(sec.key_cache_size, sec.key_cache_ttl_s, sec.kms_check_interval_s, sec.kms_retry_after_s)
    provider = load_provider(sec.kms, paths.keys)
    return DataKeys(provider, KeyStore(paths.keystore), settings.tenant, policy)


def open_sealer(settings: Settings, keys: DataKeys) -> RowSealer:
    """Field encryption, or (benchmarks only) none; a data dir never mixes the two."""
    mode = "on" if settings.security.encryption else "off"
    recorded = keys.store.setting("encryption", mode)
    if recorded != mode:
        raise KeyStoreError(f"this data dir was created with encryption {recorded}; it cannot be opened with {mode}")
    if not settings.security.encryption:
        log.warning("encryption_off", detail="field-level encryption is OFF: benchmark use only, never with PHI")
        return PlaintextSealer()
    return FieldSealer(keys)


def open_journal(settings: Settings, paths: Paths, guard: RegionGuard) -> Journal:
    return Journal(
        paths.journal,
        settings.ingest.group_commit_max_wait_ms,
        idempotency_ttl_s=settings.ingest.idempotency_ttl_hours * 3600.0,
        guard=guard,
    )


def open_lake_writer(
    settings: Settings, paths: Paths, catalog: LakeCatalog, journal: Journal, *, committer: bool = True
) -> LakeWriter:
    """The Iceberg committer, or with ``committer=False`` (a gateway beside a separate
    ``fhirlake writer``) a stand-in that never takes ``lake/writer.lock`` and never commits."""
    kind = LakeWriter if committer else StandbyLakeWriter
    return kind(
        catalog,
        journal,
        interval_s=settings.lake.commit_interval_s,
        min_rows=settings.lake.commit_min_rows,
        max_rows=settings.lake.max_batch_rows,
        hot_retention_s=settings.lake.hot_retention_s,
        lock_path=paths.lake / "writer.lock",
    )


def build(settings: Settings) -> Container:
    settings.data_dir.resolve().mkdir(parents=True, exist_ok=True, mode=0o700)
    region = active_region(settings)
    guard = RegionGuard(settings, region)
    guard.check()  # a fenced region does not start (docs/dr.md)
    region.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = Paths(region.root)
    keys = open_keys(settings)
    pseudo = Pseudonymizer(keys.secret(INDEX_SUBJECT), settings.tenant)
    sealer = open_sealer(settings, keys)
    journal = open_journal(settings, paths, guard)
    catalog = open_catalog(settings)
    breakers = Breakers()
    for breaker in (keys.breaker, catalog.guard.catalog, catalog.guard.storage):
        breakers.add(breaker)
    lake_reader = LakeReader(catalog)
    writer = open_lake_writer(settings, paths, catalog, journal, committer=settings.lake.writer_in_gateway)
    limits = Limits(max_depth=settings.limits.max_depth, max_entries=settings.limits.max_entries)
    validator = Validator(limits, settings.ingest.validation_workers)
    reads = ResourceReads(journal, lake_reader, pseudo, sealer)
    service = IngestService(journal, validator, TransactionApplier(pseudo, sealer), reads, settings.limits.max_count)
    erasure = PatientErasure(journal, keys if sealer.encrypted else None, pseudo)
    auth = build_auth(settings, paths, journal, pseudo, sealer)
    worms: list[WormSink] = []
    auditing = AuditRecorder(open_trail(settings, paths, keys, worms), settings.tenant)
    for worm in worms:
        breakers.add(worm.breaker)
    queries = AuditQueries(paths.audit, pseudo, settings.limits.max_count)
    audit_table = AuditTable(catalog)
    audit_table.ensure()
    mirror = AuditMirror(paths.audit, audit_table, interval_s=settings.audit.mirror_interval_s)
    return Container(
        settings,
        journal,
        catalog,
        writer,
        lake_reader,
        validator,
        reads,
        service,
        keys,
        erasure,
        auth,
        auditing,
        queries,
        mirror,
        BulkExports(region.root / "exports", reads, keys if sealer.encrypted else None, settings.tenant),
        sealer,
        guard,
        build_emr(region.root, keys, pseudo, sealer, service, reads),
        breakers,
        worms[0] if worms else None,
    )


AUDIT_SIGNING_SUBJECT = "audit-signing"  # the Ed25519 seed: a data key wrapped by the tenant KEK
_MAX_TRAILS = 64


def open_trail(settings: Settings, paths: Paths, keys: DataKeys, worms: list[WormSink] | None = None) -> Trail:
    """This process's audit trail: ``audit/trail-N`` (``trail-<region>-N`` outside the primary region),
    the first one no other gateway process holds. A WORM copy it builds is appended to ``worms``."""
    if not settings.audit.enabled:
        log.warning("audit_off", detail="the audit trail is OFF: benchmark use only, never with real data")
        return NullTrail()
    seed = keys.secret(AUDIT_SIGNING_SUBJECT)
    # Each region names its trails apart (trail-N, trail-<region>-N): a replicated copy of the
    # other region's trail is never appended to, and the Iceberg mirror keeps them apart.
    prefix = trail_prefix(settings, active_region(settings).name)
    for n in range(1, _MAX_TRAILS + 1):
        try:
            sink: AuditSink = SegmentFileSink(paths.audit / f"{prefix}{n}", fsync=settings.audit.fsync)
        except AuditConfigError:  # held by another gateway process (serve --workers)
            continue
        if settings.audit.worm_bucket:
            sink = WormSink(
                sink,
                bucket=settings.audit.worm_bucket,
                prefix=f"{settings.audit.worm_prefix}/{settings.tenant}/{prefix}{n}",
                retention_days=settings.audit.retention_days,
                region=settings.audit.worm_region,
                endpoint_url=settings.audit.worm_endpoint_url,
            )
            if worms is not None:
                worms.append(sink)
        return AuditTrail(
            sink,
            seed,
            checkpoint_every=settings.audit.checkpoint_every,
            checkpoint_interval_s=settings.audit.checkpoint_interval_s,
        )
    raise AuditConfigError(f"more than {_MAX_TRAILS} processes write audit trails in this data dir")


def public_base(settings: Settings) -> str:
    """The URL clients reach this server at (token audience, issuer)."""
    if settings.auth.issuer:
        return settings.auth.issuer.rstrip("/")
    scheme = "https" if settings.tls.enabled else "http"
    return f"{scheme}://{settings.server.host}:{settings.server.port}"


def open_clients(settings: Settings) -> ClientRegistry:
    return ClientRegistry(Paths(region_root(settings)).auth / "auth.db")


def build_auth(
    settings: Settings, paths: Paths, journal: Journal, pseudo: Pseudonymizer, sealer: RowSealer
) -> AuthService:
    """OAuth2 server, Casbin authorizer, break-glass ledger and the client CA for mTLS."""
    base = public_base(settings)
    oauth = AuthorizationServer(
        ClientRegistry(paths.auth / "auth.db"), paths.auth / "signing.key", settings.auth, f"{base}/auth/token", base
    )
    ledger = BreakGlassLedger(paths.auth / "break_glass.db", sealer)
    ca_pem = tls_files(settings).client_ca.read_bytes()
    enforcer = database_enforcer(settings.auth.policy_db_url) if settings.auth.policy_db_url else None
    authorizer = Authorizer(settings.tenant, enforcer)
    return AuthService(
        oauth, authorizer, journal, pseudo, ledger, settings.tls, ca_pem, settings.auth.break_glass_minutes
    )
