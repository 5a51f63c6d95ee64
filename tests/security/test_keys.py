"""Data keys: one per subject, cached within bounds, failing closed, rotated and shredded."""

from __future__ import annotations

import base64
import os
import sqlite3
from pathlib import Path

import pytest
from pydantic import SecretStr

from security.ciphertext import RecordRef, open_sealed, seal
from security.config import KmsSettings
from security.errors import KeyAccessError, KeyShreddedError, KmsUnavailableError
from security.keys import CachePolicy, DataKeys
from security.keystore import KeyStore
from security.kms import Context
from security.kms_local import LocalKeyProvider

REC = RecordRef("default", "Observation", "o1", 1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingKms(LocalKeyProvider):
    """The real local provider, with a switch that makes it unreachable and a call counter."""

    down = False
    unwraps = 0

    def decrypt_data_key(self, kek_id: str, wrapped: bytes, context: Context) -> bytes:
        self._gate()
        self.unwraps += 1
        return super().decrypt_data_key(kek_id, wrapped, context)

    def generate_data_key(self, kek_id: str, context: Context) -> tuple[bytes, bytes]:
        self._gate()
        return super().generate_data_key(kek_id, context)

    def probe(self, tenant: str) -> None:
        self._gate()

    def _gate(self) -> None:
        if self.down:
            raise KmsUnavailableError("down")


def make_keys(tmp_path: Path, clock: Clock, **policy: float) -> tuple[DataKeys, CountingKms]:
    kms = CountingKms(KmsSettings(), tmp_path / "keys")
    defaults = {"size": 100, "ttl_s": 300.0, "check_interval_s": 5.0, "retry_after_s": 2.0}
    cache = CachePolicy(**{**defaults, **policy})  # type: ignore[arg-type]
    return DataKeys(kms, KeyStore(tmp_path / "keys" / "keystore.db"), "default", cache, clock), kms


def test_one_key_per_subject_stored_wrapped(tmp_path: Path) -> None:
    keys, _ = make_keys(tmp_path, Clock())
    a1, _ = keys.for_subject("patient:a")
    a2, _ = keys.for_subject("patient:a")
    b, _ = keys.for_subject("patient:b")
    assert a1 == a2 != b
    stored = keys.store.get("default", "patient:a")
    assert stored is not None and len(stored.wrapped) > 32  # wrapped, never the raw key
    assert (tmp_path / "keys" / "keyring.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "keys" / "keystore.db").stat().st_mode & 0o777 == 0o600


def test_cache_is_bounded_by_count_and_age(tmp_path: Path) -> None:
    clock = Clock()
    keys, kms = make_keys(tmp_path, clock, size=2, ttl_s=60.0)
    ids = [keys.for_subject(f"patient:{n}")[0] for n in range(3)]
    before = kms.unwraps
    keys.by_id(ids[2])
    assert kms.unwraps == before  # still cached
    keys.by_id(ids[0])
    assert kms.unwraps == before + 1  # evicted by count: the KMS is asked again
    clock.now += 61
    keys.by_id(ids[0])
    assert kms.unwraps == before + 2  # expired by age


def test_unreachable_kms_fails_closed_even_with_cached_keys_and_recovers(tmp_path: Path) -> None:
    clock = Clock()
    keys, kms = make_keys(tmp_path, clock, check_interval_s=5.0, retry_after_s=2.0)
    key_id, _ = keys.for_subject("patient:a")
    kms.down = True
    keys.by_id(key_id)  # within the probe interval the cache still serves
    clock.now += 6
    with pytest.raises(KmsUnavailableError):
        keys.by_id(key_id)
    assert not keys.kms_available
    kms.down = False
    clock.now += 1
    with pytest.raises(KmsUnavailableError):  # fails fast until the retry time
        keys.by_id(key_id)
    clock.now += 2
    assert keys.by_id(key_id) is not None
    assert keys.kms_available


def test_rotation_rewraps_every_key_and_old_ciphertext_still_opens(tmp_path: Path) -> None:
    keys, kms = make_keys(tmp_path, Clock())
    sealed = {}
    for n in range(5):
        key_id, aead = keys.for_subject(f"patient:{n}")
        sealed[n] = (key_id, seal(aead, key_id, REC, "resource", f"value {n}".encode()))
    before = {k: keys.store.get("default", f"patient:{k}") for k in range(5)}
    report = keys.rotate(settle_s=0)
    assert report.rewrapped == 5 and report.remaining == 0
    assert set(keys.store.count_by_kek()) == {report.kek_id}
    fresh = DataKeys(kms, keys.store, "default")  # nothing cached: every key unwrapped under the new KEK
    for n, (key_id, value) in sealed.items():
        after = keys.store.get("default", f"patient:{n}")
        assert after is not None and before[n] is not None
        assert after.key_id == before[n].key_id and after.wrapped != before[n].wrapped  # type: ignore[union-attr]
        assert open_sealed(fresh.by_id(key_id), REC, "resource", value) == f"value {n}".encode()


def test_shred_destroys_the_key_in_every_copy_and_in_other_processes(tmp_path: Path) -> None:
    clock = Clock()
    keys, kms = make_keys(tmp_path, clock)
    key_id, _ = keys.for_subject("patient:gone")
    keep_id, _ = keys.for_subject("patient:kept")
    copy = tmp_path / "backup" / "keystore.db"
    keys.store.backup_to(copy)
    other = DataKeys(kms, KeyStore(tmp_path / "keys" / "keystore.db"), "default", clock=clock)
    other.by_id(key_id)  # another process has it cached

    report = keys.shred("patient:gone")
    assert report.destroyed == 2 and report.copies_reached == [str(copy.resolve())]
    for path in (tmp_path / "keys" / "keystore.db", copy):
        rows = sqlite3.connect(path).execute("SELECT COUNT(*) FROM data_keys WHERE key_id=?", (key_id,)).fetchone()
        assert rows == (0,)
    with pytest.raises(KeyShreddedError):
        keys.by_id(key_id)
    with pytest.raises(KeyShreddedError):
        keys.for_subject("patient:gone")  # no new key for an erased patient
    clock.now += 1.5
    with pytest.raises(KeyShreddedError):
        other.by_id(key_id)  # dropped from the other cache within a second
    assert other.by_id(keep_id) is not None


def test_master_secret_from_settings_and_a_wrong_one_is_refused(tmp_path: Path) -> None:
    secret = base64.b64encode(os.urandom(32)).decode()
    kms = LocalKeyProvider(KmsSettings(master_key=SecretStr(secret)), tmp_path / "keys")
    kek = kms.current_kek("default")
    _, wrapped = kms.generate_data_key(kek, {"subject": "x"})
    assert not (tmp_path / "keys" / "master.key").exists()
    wrong = LocalKeyProvider(
        KmsSettings(master_key=SecretStr(base64.b64encode(os.urandom(32)).decode())), tmp_path / "keys"
    )
    with pytest.raises(KeyAccessError):
        wrong.decrypt_data_key(kek, wrapped, {"subject": "x"})
    with pytest.raises(KeyAccessError):
        kms.decrypt_data_key(kek, wrapped, {"subject": "y"})  # the context is bound
