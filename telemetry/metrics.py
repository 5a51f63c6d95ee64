"""The catalog of fhirlake's Prometheus instruments, in one registry per process.

Instruments are process-wide, like OpenTelemetry's tracer: the layer that does the work records
into them (the gateway per request, the lake writer per commit, the key service per KMS call), and
``fhirlake.metrics`` renders the registry at ``/metrics`` together with the gauges it reads at
scrape time (backlog, lag, breaker states). The module depends on ``prometheus_client`` only, so
lake, security and audit may import it without reaching up the layers.

Label values are bounded and never PHI: route templates (``/fhir/{rtype}/{rid}``, never a path),
HTTP methods and status codes, table names, KMS operation names, sink and reason names.
``tests/gateway/test_metrics.py`` seeds canary PHI and checks the exposition for it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.process_collector import ProcessCollector

__all__ = [
    "AUDIT_APPEND_SECONDS",
    "AUDIT_SINK_FAILURES",
    "AUDIT_WORM_BACKLOG_RECORDS",
    "AUDIT_WORM_BACKLOG_SECONDS",
    "BREAKER_TRANSITIONS",
    "HTTP_REQUESTS",
    "HTTP_REQUEST_SECONDS",
    "INGEST_RESOURCES",
    "KEY_CACHE_HITS",
    "KEY_CACHE_MISSES",
    "KMS_ERRORS",
    "KMS_REQUEST_SECONDS",
    "LAKE_COMMITS",
    "LAKE_COMMIT_SECONDS",
    "LAKE_FILES_WRITTEN",
    "REGISTRY",
    "THROTTLED",
]

REGISTRY = CollectorRegistry()
ProcessCollector(namespace="fhirlake", registry=REGISTRY)  # RSS, CPU, open fds: shedding and sizing

# Request latency from 5 ms (a cached read) to 60 s (a 10,000-entry transaction under load).
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Dependency calls: a local KMS answers in microseconds, AWS KMS in ~5-50 ms, a commit in 10 ms-10 s.
_CALL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "fhirlake_http_requests",
    "HTTP requests answered, by route template, method and status code.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
HTTP_REQUEST_SECONDS = Histogram(
    "fhirlake_http_request_duration_seconds",
    "Time from the request's arrival to the end of its answer, by route template and method.",
    ["route", "method"],
    buckets=_HTTP_BUCKETS,
    registry=REGISTRY,
)
THROTTLED = Counter(
    "fhirlake_throttled",
    "Requests refused by protection: rate or concurrency limit of a client (429), shedding (503).",
    ["reason"],
    registry=REGISTRY,
)
INGEST_RESOURCES = Counter(
    "fhirlake_ingest_resources",
    "Resource versions accepted durably (journal fsynced), replays not counted.",
    registry=REGISTRY,
)
LAKE_COMMITS = Counter(
    "fhirlake_lake_commits",
    "Iceberg commits of the lake writer by table and outcome (ok, conflict, error).",
    ["table", "outcome"],
    registry=REGISTRY,
)
LAKE_COMMIT_SECONDS = Histogram(
    "fhirlake_lake_commit_duration_seconds",
    "Duration of one successful Iceberg commit (Parquet write plus catalog update), by table.",
    ["table"],
    buckets=_CALL_BUCKETS,
    registry=REGISTRY,
)
LAKE_FILES_WRITTEN = Counter(
    "fhirlake_lake_files_written",
    "Parquet data files added by the lake writer's commits, by table (files per commit = this / commits).",
    ["table"],
    registry=REGISTRY,
)
KMS_REQUEST_SECONDS = Histogram(
    "fhirlake_kms_request_duration_seconds",
    "Duration of KMS calls by operation (generate_data_key, decrypt_data_key, current_kek, probe).",
    ["operation"],
    buckets=_CALL_BUCKETS,
    registry=REGISTRY,
)
KMS_ERRORS = Counter(
    "fhirlake_kms_errors",
    "KMS calls that failed because the KMS was unreachable or refused, by operation.",
    ["operation"],
    registry=REGISTRY,
)
KEY_CACHE_HITS = Counter(
    "fhirlake_key_cache_hits",
    "Data key lookups served from the in-memory cache (no KMS call).",
    registry=REGISTRY,
)
KEY_CACHE_MISSES = Counter(
    "fhirlake_key_cache_misses",
    "Data key lookups that had to unwrap or create a key through the KMS.",
    registry=REGISTRY,
)
AUDIT_APPEND_SECONDS = Histogram(
    "fhirlake_audit_append_duration_seconds",
    "Time for a request's audit record to become durable (the answer waits for it).",
    buckets=_CALL_BUCKETS,
    registry=REGISTRY,
)
AUDIT_SINK_FAILURES = Counter(
    "fhirlake_audit_sink_failures",
    "Failed writes to an audit sink, by sink (trail: the local hash-chained trail; worm: the S3 copy).",
    ["sink"],
    registry=REGISTRY,
)
BREAKER_TRANSITIONS = Counter(
    "fhirlake_circuit_breaker_transitions",
    "Circuit breaker state changes, by dependency and the state entered (closed, half_open, open).",
    ["dependency", "state"],
    registry=REGISTRY,
)
AUDIT_WORM_BACKLOG_RECORDS = Gauge(
    "fhirlake_audit_worm_backlog_records",
    "Audit lines durable in the local trail and not yet shipped to the WORM copy.",
    registry=REGISTRY,
)
AUDIT_WORM_BACKLOG_SECONDS = Gauge(
    "fhirlake_audit_worm_backlog_seconds",
    "Age of the oldest audit line not yet shipped to the WORM copy (0 when nothing waits).",
    registry=REGISTRY,
)
