"""Ingest use cases: validate, resolve, accept durably and idempotently."""
