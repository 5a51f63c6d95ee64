"""The raw zone seals every payload under the tenant key, bound to its hash; tampering is detected."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhirlake.bootstrap import open_keys
from ingest.raw_zone import RawZone
from security.errors import CiphertextError
from security.sealing import FieldSealer
from tests.fixtures.app import make_settings


@pytest.fixture
def zone(tmp_path: Path) -> Iterator[RawZone]:
    keys = open_keys(make_settings(tmp_path / "data"))
    raw = RawZone(tmp_path / "data" / "ingest" / "raw.db", FieldSealer(keys))
    try:
        yield raw
    finally:
        raw.close()
        keys.store.close()


def _sha(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def test_payloads_are_sealed_kept_once_and_opened_back(zone: RawZone, tmp_path: Path) -> None:
    payload = b"MSH|^~\\&|A|B|||2024||ADT^A01|1|P|2.5\rPID|1||Zqxcanary-MRN^^^B^MR||Zqxcanary^Ann\r"
    first = zone.keep(_sha(payload), "hl7v2", "x-application/hl7-v2+er7", payload)
    again = zone.keep(_sha(payload), "hl7v2", "x-application/hl7-v2+er7", payload)
    assert first == again and first.size == len(payload) and first.status == "received"
    assert zone.open(first.sha) == payload
    stored = b"".join(p.read_bytes() for p in (tmp_path / "data" / "ingest").glob("raw.db*"))
    assert b"Zqxcanary" not in stored
    assert [r.sha for r in zone.since("hl7v2", 0)] == [first.sha] and list(zone.since("epic", 0)) == []


def test_a_tampered_or_moved_payload_fails_to_open(zone: RawZone, tmp_path: Path) -> None:
    one, two = b'{"resourceType": "Patient"}', b'{"resourceType": "Group"}'
    zone.keep(_sha(one), "fhir", None, one)
    zone.keep(_sha(two), "fhir", None, two)
    conn = sqlite3.connect(tmp_path / "data" / "ingest" / "raw.db")
    sealed = conn.execute("SELECT sealed FROM raw WHERE sha=?", (_sha(one),)).fetchone()[0]
    conn.execute("UPDATE raw SET sealed=? WHERE sha=?", (sealed, _sha(two)))  # moved to another record
    conn.commit()
    with pytest.raises(CiphertextError):
        zone.open(_sha(two))
    flipped = bytes(sealed[:-1]) + bytes([sealed[-1] ^ 1])
    conn.execute("UPDATE raw SET sealed=? WHERE sha=?", (flipped, _sha(one)))
    conn.commit()
    conn.close()
    with pytest.raises(CiphertextError):
        zone.open(_sha(one))


def test_dead_letters_count_attempts_and_resolve(zone: RawZone) -> None:
    payload = b"not hl7"
    sha = _sha(payload)
    zone.keep(sha, "hl7v2", None, payload)
    letter = zone.dead_letter(sha, "hl7v2", "adapter-rejected", "invalid at MSH: no MSH segment")
    assert zone.dead_letter(sha, "hl7v2", "adapter-rejected", "invalid at MSH: no MSH segment").attempts == 2
    assert [x.id for x in zone.letters()] == [letter.id]
    zone.resolve(sha, "hl7v2")
    assert zone.letters() == [] and zone.letters("resolved")[0].id == letter.id
