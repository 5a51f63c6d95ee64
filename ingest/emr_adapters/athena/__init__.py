"""The athena adapter (see adapter.py)."""
