"""Multi-region replication, failover, failback and DR drills (docs/dr.md)."""
