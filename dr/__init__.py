"""Multi-region replication and DR drills. Planned: see the DR issue."""
