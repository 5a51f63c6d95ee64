"""The cerner adapter (see adapter.py)."""
