"""Audit trail: append-only, hash-chained, signed; verifiable without any secret.

    audit.events    audit_event(...), AuditAction, Outcome: FHIR AuditEvent dicts from ids and codes only
    audit.chain     the record format (canonical JSON + spliced SHA-256), Ed25519 checkpoint signing
    audit.trail     AuditTrail: group commit on a writer thread, checkpoints, resume, fail-closed
    audit.sinks     the AuditSink protocol, the sink registry, MemorySink
    audit.segments  SegmentFileSink: segment files, checkpoints.log, public_keys.json; fsync policy
    audit.verify    verify(directory) -> VerifyReport naming segment, line, seq and kind of a break
    audit.errors    AuditError and its leaves

The package imports nothing from ``gateway``; callers turn AuditUnavailableError into a 503.
"""
