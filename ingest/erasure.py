"""Erasure of a patient by crypto-shredding (``$purge``, ``fhirlake keys shred``).

The patient's data key is destroyed in the key store and in every registered
copy of it; every sealed value of the patient — in the journal, the current
lake tables, older snapshots, exports, replicas — is then unreadable. The
journal forgets the patient's blind-index tokens and marks the patient's
resources erased, so searches no longer list them and reads answer 410.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ingest.errors import InvalidInputError, Issue, ResourceNotFoundError
from ingest.journal import Journal, WriteContext
from security.keys import DataKeys, patient_subject
from security.pseudonym import Pseudonymizer


@dataclass(frozen=True, slots=True)
class ErasureReport:
    resources: int  # resources of the patient now erased
    keys_destroyed: int
    copies_reached: list[str] = field(default_factory=list)
    copies_missing: list[str] = field(default_factory=list)


class PatientErasure:
    def __init__(self, journal: Journal, keys: DataKeys | None, pseudo: Pseudonymizer) -> None:
        self._journal = journal
        self._keys = keys
        self._pseudo = pseudo

    def erase(self, patient_id: str) -> ErasureReport:
        """Shred the patient's key, then retire the patient from the indexes.

        Raises ResourceNotFoundError for an unknown patient, InvalidInputError
        when encryption is off (nothing could be shredded).
        """
        if self._keys is None:
            raise InvalidInputError(
                "erasure needs encryption", [Issue("not-supported", "erasure needs field-level encryption on")]
            )
        if self._journal.current("Patient", patient_id) is None:
            raise ResourceNotFoundError("Patient resource not found")
        patient_key = self._pseudo.patient_key(patient_id)
        shred = self._keys.shred(patient_subject(patient_key))
        resources = self._journal.submit(lambda ctx: _retire(ctx, patient_key)).result()
        return ErasureReport(resources, shred.destroyed, shred.copies_reached, shred.copies_missing)

    async def erase_async(self, patient_id: str) -> ErasureReport:
        return await asyncio.to_thread(self.erase, patient_id)


def _retire(ctx: WriteContext, patient_key: str) -> int:
    ctx.conn.execute(
        "DELETE FROM tokens WHERE EXISTS (SELECT 1 FROM current c "
        "WHERE c.rtype=tokens.rtype AND c.id=tokens.id AND c.patient_key=?)",
        (patient_key,),
    )
    # deleted=2: erased. Reads find the version and fail to open it (410); searches skip it.
    return int(ctx.conn.execute("UPDATE current SET deleted=2 WHERE patient_key=?", (patient_key,)).rowcount)
