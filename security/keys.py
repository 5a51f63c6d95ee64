"""Data keys: created per subject, wrapped by the tenant KEK, cached unwrapped, shredded.

``DataKeys`` is the only holder of unwrapped keys. It keeps at most
``cache_size`` of them for at most ``cache_ttl_s`` (after which the KMS is asked
again), fails closed while the KMS is unreachable (a circuit breaker probes it
every ``check_interval_s`` and fails fast for ``retry_after_s`` after an error),
and drops every cached key within a second of a shred by any process.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from opentelemetry import trace

from resilience import (
    Breaker,
    BreakerPolicy,
    BreakerState,
    CircuitOpenError,
    DeadlineExceededError,
    RetryPolicy,
    check_deadline,
    retry,
)
from security.ciphertext import KEY_ID_BYTES
from security.errors import KeyShreddedError, KeyStoreError, KmsUnavailableError
from security.keystore import KeyStore, ShredReport, StoredKey
from security.kms import KeyProvider
from telemetry.metrics import KEY_CACHE_HITS, KEY_CACHE_MISSES

_tracer = trace.get_tracer("fhirlake.security")

TENANT_SUBJECT = "tenant"  # resources outside any patient compartment
INDEX_SUBJECT = "index"  # the blind-index key
_EPOCH_POLL_S = 1.0
T = TypeVar("T")
_KMS_RETRY = RetryPolicy(attempts=3, base_s=0.05, max_s=0.5)  # one failed logical call opens the breaker


def patient_subject(patient_key: str | None) -> str:
    return TENANT_SUBJECT if patient_key is None else f"patient:{patient_key}"


@dataclass(frozen=True, slots=True)
class CachePolicy:
    size: int = 10_000
    ttl_s: float = 300.0
    check_interval_s: float = 5.0
    retry_after_s: float = 2.0
    slow_call_s: float | None = None  # a KMS call slower than this counts against the breaker


@dataclass(frozen=True, slots=True)
class RotationReport:
    kek_id: str
    rewrapped: int
    remaining: int


class _KmsGuard:
    """The KMS behind a circuit breaker: fails closed while it is open, and probes the KMS every
    ``check_interval_s`` while keys come from the cache, so a KMS outage is noticed even by a
    process that never misses the cache. Idempotent calls are retried with jittered backoff."""

    def __init__(self, probe: Callable[[], None], policy: CachePolicy, clock: Callable[[], float]) -> None:
        self.breaker = Breaker(
            "kms",
            BreakerPolicy(_KMS_RETRY.attempts, policy.retry_after_s, policy.slow_call_s),
            (KmsUnavailableError,),
            clock,
        )
        self._probe = probe
        self._policy = policy
        self._clock = clock
        self._next_probe = 0.0
        self._probing = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self.breaker.state is BreakerState.OPEN

    def check(self) -> None:
        try:
            self.breaker.check()
        except CircuitOpenError:
            raise KmsUnavailableError("the KMS is unreachable") from None
        now = self._clock()
        if now >= self._next_probe and self._probing.acquire(blocking=False):
            try:
                self.call(self._probe, idempotent=True)
                self._next_probe = now + self._policy.check_interval_s
            finally:
                self._probing.release()

    def call(self, fn: Callable[[], T], *, idempotent: bool = False) -> T:
        """Run one KMS operation. Raises KmsUnavailableError (down, breaker open, out of time) or
        what the provider raises."""
        try:
            check_deadline("a KMS call")
            if not idempotent:
                return self.breaker.call(fn)
            return retry(lambda: self.breaker.call(fn), _KMS_RETRY, (KmsUnavailableError,), operation="a KMS call")
        except KmsUnavailableError:
            self._next_probe = 0.0
            raise
        except (CircuitOpenError, DeadlineExceededError):
            self._next_probe = 0.0
            raise KmsUnavailableError("the KMS is unreachable") from None


class DataKeys:
    def __init__(
        self,
        provider: KeyProvider,
        store: KeyStore,
        tenant: str,
        policy: CachePolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self.store = store
        self.tenant = tenant
        self._policy = policy or CachePolicy()
        self._clock = clock
        self._breaker = _KmsGuard(lambda: provider.probe(tenant), self._policy, clock)
        self._lock = threading.Lock()
        self._by_id: OrderedDict[bytes, tuple[AESGCM, float, str]] = OrderedDict()
        self._by_subject: dict[str, bytes] = {}
        self._epoch = store.epoch()
        self._epoch_checked = clock()

    def __repr__(self) -> str:
        return f"DataKeys(tenant={self.tenant!r}, provider={self.provider.name}, cached={len(self._by_id)})"

    @property
    def kms_available(self) -> bool:
        return not self._breaker.is_open

    @property
    def breaker(self) -> Breaker:
        """The KMS circuit breaker (its state is on ``/metrics`` and ``/readyz``)."""
        return self._breaker.breaker

    def healthy(self) -> bool:
        """Whether keys can be served now (probes the KMS at most once per check interval)."""
        try:
            self._breaker.check()
        except KmsUnavailableError:
            return False
        return True

    # -- lookups ------------------------------------------------------------------------------

    def for_subject(self, subject: str) -> tuple[bytes, AESGCM]:
        """The key id and cipher of ``subject``'s DEK, created on first use.

        Raises KeyShreddedError (the subject was erased), KmsUnavailableError.
        """
        self._admit()
        key_id = self._by_subject.get(subject)
        aead = None if key_id is None else self._cached(key_id)
        if key_id is not None and aead is not None:
            KEY_CACHE_HITS.inc()
            return key_id, aead
        KEY_CACHE_MISSES.inc()
        stored = self.store.get(self.tenant, subject)
        if stored is None:
            stored, raw = self._create(subject)
            if raw is not None:
                return stored.key_id, self._remember(stored, raw)
        return stored.key_id, self._unwrap(stored)

    def by_id(self, key_id: bytes) -> AESGCM:
        """The cipher of the DEK ``key_id``. Raises KeyShreddedError, KmsUnavailableError, KeyStoreError."""
        self._admit()
        aead = self._cached(key_id)
        if aead is not None:
            KEY_CACHE_HITS.inc()
            return aead
        KEY_CACHE_MISSES.inc()
        stored = self.store.get_by_id(key_id)
        if stored is None:
            if self.store.shredded_key(key_id):
                raise KeyShreddedError("the data key was destroyed")
            raise KeyStoreError("a data key referenced by stored data is missing from the key store")
        return self._unwrap(stored)

    def ensure(self, subjects: Iterable[str]) -> None:
        """Create or unwrap the keys of ``subjects`` now (before a write job needs them)."""
        for subject in subjects:
            self.for_subject(subject)

    def secret(self, subject: str) -> bytes:
        """The raw 32 bytes of ``subject``'s key (the blind-index key); never cached here."""
        self._admit()
        stored = self.store.get(self.tenant, subject)
        if stored is None:
            stored, raw = self._create(subject)
            if raw is not None:
                return raw
        return self._breaker.call(
            lambda: self.provider.decrypt_data_key(stored.kek_id, stored.wrapped, _context(stored)), idempotent=True
        )

    # -- lifecycle ----------------------------------------------------------------------------

    def shred(self, subject: str) -> ShredReport:
        """Destroy ``subject``'s DEK in the store and its copies, and forget it here."""
        report = self.store.shred(self.tenant, subject)
        with self._lock:
            key_id = self._by_subject.pop(subject, None)
            if key_id is not None:
                self._by_id.pop(key_id, None)
        return report

    def rotate(self, settle_s: float = 0.5) -> RotationReport:
        """Re-wrap every DEK of the tenant under a new KEK version; data is not touched."""
        new_kek = self._breaker.call(lambda: self.provider.rotate(self.tenant))
        rewrapped = 0
        for final in (False, True):
            if final:
                time.sleep(settle_s)  # let keys created under the old version by running gateways land
            while batch := self.store.keys_not_under(self.tenant, new_kek, 500):
                for key in batch:
                    wrapped = self._breaker.call(
                        lambda k=key: self.provider.rewrap(k.kek_id, k.wrapped, new_kek, _context(k))  # type: ignore[misc]
                    )
                    rewrapped += self.store.rewrapped(key, new_kek, wrapped)
        remaining = sum(n for kek, n in self.store.count_by_kek().items() if kek != new_kek)
        return RotationReport(new_kek, rewrapped, remaining)

    # -- internals ----------------------------------------------------------------------------

    def _admit(self) -> None:
        self._breaker.check()
        now = self._clock()
        if now - self._epoch_checked >= _EPOCH_POLL_S:
            self._epoch_checked = now
            epoch = self.store.epoch()
            if epoch != self._epoch:  # a shred somewhere: drop every cached key, re-read on demand
                with self._lock:
                    self._by_id.clear()
                    self._by_subject.clear()
                    self._epoch = epoch

    def _cached(self, key_id: bytes) -> AESGCM | None:
        with self._lock:
            hit = self._by_id.get(key_id)
            if hit is None:
                return None
            if self._clock() - hit[1] > self._policy.ttl_s:
                del self._by_id[key_id]
                return None
            self._by_id.move_to_end(key_id)
            return hit[0]

    def _create(self, subject: str) -> tuple[StoredKey, bytes | None]:
        """A new DEK for ``subject``; the raw key unless another process stored one first."""
        if self.store.is_shredded(self.tenant, subject):
            raise KeyShreddedError("the subject was erased")
        key_id = os.urandom(KEY_ID_BYTES)
        kek_id = self._breaker.call(lambda: self.provider.current_kek(self.tenant), idempotent=True)
        context = {"tenant": self.tenant, "subject": subject, "key_id": key_id.hex()}
        with _tracer.start_as_current_span("kms.generate_data_key"):
            raw, wrapped = self._breaker.call(lambda: self.provider.generate_data_key(kek_id, context))
        try:
            stored = self.store.insert(StoredKey(key_id, self.tenant, subject, kek_id, wrapped))
        except KeyStoreError:
            raise KeyShreddedError("the subject was erased") from None
        return stored, raw if stored.key_id == key_id else None

    def _unwrap(self, stored: StoredKey) -> AESGCM:
        with _tracer.start_as_current_span("kms.decrypt_data_key"):
            raw = self._breaker.call(
                lambda: self.provider.decrypt_data_key(stored.kek_id, stored.wrapped, _context(stored)),
                idempotent=True,
            )
        return self._remember(stored, raw)

    def _remember(self, stored: StoredKey, raw: bytes) -> AESGCM:
        aead = AESGCM(raw)
        with self._lock:
            self._by_id[stored.key_id] = (aead, self._clock(), stored.subject)
            self._by_id.move_to_end(stored.key_id)
            self._by_subject[stored.subject] = stored.key_id
            while len(self._by_id) > self._policy.size:
                _, (_, _, subject) = self._by_id.popitem(last=False)
                self._by_subject.pop(subject, None)
        return aead


def _context(key: StoredKey) -> dict[str, str]:
    return {"tenant": key.tenant, "subject": key.subject, "key_id": key.key_id.hex()}
