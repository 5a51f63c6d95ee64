"""Errors raised by the DR package.

DrError                     (fhirlake.errors.FhirlakeError)
 ├── RegionFencedError      this region was fenced by a failover: it must not accept writes (503)
 ├── RegionUnavailableError a region's storage cannot be reached
 ├── ReplicationError       a replication round could not complete (nothing was advanced)
 └── DrStateError           the DR control state does not allow the operation (e.g. failback
                            while the primary is active)

Messages name regions, tables, files and counts, never resource contents.
"""

from __future__ import annotations

from fhirlake.errors import FhirlakeError


class DrError(FhirlakeError):
    code = "dr-error"


class RegionFencedError(DrError):
    code = "dr-fenced"


class RegionUnavailableError(DrError):
    code = "dr-region-unavailable"


class ReplicationError(DrError):
    code = "dr-replication"


class DrStateError(DrError):
    code = "dr-state"
