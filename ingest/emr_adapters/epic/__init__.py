"""The epic adapter (see adapter.py)."""
