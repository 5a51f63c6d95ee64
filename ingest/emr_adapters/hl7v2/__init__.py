"""The hl7v2 adapter (see adapter.py)."""
