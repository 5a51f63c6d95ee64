"""Audit trail (append-only, hash-chained). Planned: see the audit issue; nothing is recorded yet."""
