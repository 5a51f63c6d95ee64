"""One patient across systems: the enterprise patient key (a small master patient index).

Every Patient an adapter delivers is placed under an enterprise key before it
is stored, and the key is written into the Patient as an identifier
(``urn:fhirlake:enterprise-patient-key``) so that a search finds every source
record of the person.

Matching, in order:

1. **Deterministic** — a trusted identifier (any identifier with a real system:
   SSN, an MRN of a known assigning authority, an Epic record id…) already
   belongs to a member: same key.
2. **Probabilistic** — demographics compared as blind-index tokens (never in
   clear), each agreement adding its weight::

       family name 4, first given name 3, birth date 5, gender 1, phone 3, postal code 2   (max 18)

   ``score >= 12`` with an agreeing birth date is a *match* (same key);
   ``8 <= score < 12`` is a *possible* match: reported by ``Patient/$match``,
   never linked automatically; below 8 is *no match*. A shared name alone
   (4 + 3 + 1 = 8) is therefore never enough.
3. Otherwise a new random key.

A merge (HL7 ADT^A40) never rewrites anything: the prior key is linked to the
survivor's (``key_links``), and readers follow the links.

The store is SQLite under ``<data-dir>/ingest/empi.db``: patient keys are the
pseudonymous keys of ``security.pseudonym``, identifiers and demographics
only HMAC tokens, logical ids sealed under the tenant key.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from security.keys import TENANT_SUBJECT
from security.pseudonym import Pseudonymizer
from security.sealing import RowSealer

ENTERPRISE_SYSTEM = "urn:fhirlake:enterprise-patient-key"
WEIGHTS = {"family": 4.0, "given": 3.0, "birthdate": 5.0, "gender": 1.0, "phone": 3.0, "postal": 2.0}
MATCH_THRESHOLD = 12.0
POSSIBLE_THRESHOLD = 8.0
_UNTRUSTED_PREFIXES = (ENTERPRISE_SYSTEM,)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS members (
    patient_key TEXT PRIMARY KEY, ekey TEXT NOT NULL, how TEXT NOT NULL, score REAL, sealed_id BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS members_by_ekey ON members (ekey);
CREATE TABLE IF NOT EXISTS id_tokens (token TEXT NOT NULL, patient_key TEXT NOT NULL, PRIMARY KEY (token, patient_key));
CREATE TABLE IF NOT EXISTS demo_tokens (
    patient_key TEXT NOT NULL, field TEXT NOT NULL, token TEXT NOT NULL, PRIMARY KEY (patient_key, field, token));
CREATE INDEX IF NOT EXISTS demo_by_token ON demo_tokens (token);
CREATE TABLE IF NOT EXISTS key_links (prior TEXT PRIMARY KEY, survivor TEXT NOT NULL, reason TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Candidate:
    patient_id: str
    ekey: str
    score: float
    grade: str  # certain (identifier), probable, possible


def grade_of(score: float) -> str:
    if score >= MATCH_THRESHOLD:
        return "probable"
    return "possible" if score >= POSSIBLE_THRESHOLD else "certainly-not"


class PatientIndex:
    def __init__(self, path: Path, pseudo: Pseudonymizer, sealer: RowSealer) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA busy_timeout=10000")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._pseudo = pseudo
        self._sealer = sealer

    def __repr__(self) -> str:
        return "PatientIndex(tokens only)"

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def assign(self, patient: dict[str, Any]) -> str:
        """The enterprise key of ``patient`` (matching it, or minting one); records its tokens."""
        pid = str(patient["id"])
        pkey = self._pseudo.patient_key(pid)
        id_tokens = self._id_tokens(patient)
        demo = self._demo_tokens(patient)
        with self._lock, self._transaction():
            ekey, how, score = self._match_locked(pkey, id_tokens, demo)
            sealed = self._seal_id(pkey, pid)
            self._conn.execute(
                "INSERT INTO members VALUES (?,?,?,?,?) ON CONFLICT (patient_key) DO UPDATE SET "
                "ekey=excluded.ekey, how=excluded.how, score=excluded.score",
                (pkey, ekey, how, score, sealed),
            )
            self._conn.executemany("INSERT OR IGNORE INTO id_tokens VALUES (?,?)", [(t, pkey) for t in id_tokens])
            self._conn.execute("DELETE FROM demo_tokens WHERE patient_key=?", (pkey,))
            self._conn.executemany(
                "INSERT OR IGNORE INTO demo_tokens VALUES (?,?,?)", [(pkey, f, t) for f, ts in demo.items() for t in ts]
            )
        return self._resolve(ekey)

    def merge(self, survivor_id: str, prior_id: str) -> str:
        """Link the prior patient's key to the survivor's (nothing is rewritten); returns the survivor's key."""
        survivor = self.key_of(survivor_id)
        if survivor is None:
            raise KeyError("survivor")
        prior_pkey = self._pseudo.patient_key(prior_id)
        with self._lock, self._transaction():
            row = self._conn.execute("SELECT ekey FROM members WHERE patient_key=?", (prior_pkey,)).fetchone()
            if row is None:
                self._conn.execute(
                    "INSERT INTO members VALUES (?,?,?,?,?)",
                    (prior_pkey, survivor, "merge", None, self._seal_id(prior_pkey, prior_id)),
                )
            elif row[0] != survivor:
                self._conn.execute("INSERT OR REPLACE INTO key_links VALUES (?,?,?)", (row[0], survivor, "merge"))
        return survivor

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """Match and record atomically, also against other gateway processes sharing the file."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def key_of(self, patient_id: str) -> str | None:
        """The current enterprise key of a patient (following merge links), or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT ekey FROM members WHERE patient_key=?", (self._pseudo.patient_key(patient_id),)
            ).fetchone()
        return None if row is None else self._resolve(str(row[0]))

    def members(self, ekey: str) -> list[str]:
        """Logical ids of every patient under ``ekey`` (including keys merged into it)."""
        with self._lock:
            keys = {ekey} | {r[0] for r in self._conn.execute("SELECT prior FROM key_links WHERE survivor=?", (ekey,))}
            marks = ",".join("?" * len(keys))
            rows = self._conn.execute(
                f"SELECT patient_key, sealed_id FROM members WHERE ekey IN ({marks})",  # noqa: S608
                tuple(keys),
            ).fetchall()
        return sorted(self._open_id(pkey, sealed) for pkey, sealed in rows)

    def candidates(self, patient: dict[str, Any], limit: int = 10) -> list[Candidate]:
        """Scored candidates for ``patient`` (``Patient/$match``), best first."""
        id_tokens = self._id_tokens(patient)
        demo = self._demo_tokens(patient)
        with self._lock:
            certain = self._by_identifiers(id_tokens)
            scored = self._scores(demo)
            for pkey in certain:
                scored[pkey] = max(scored.get(pkey, 0.0), sum(WEIGHTS.values()))
            marks = ",".join("?" * len(scored))
            query = f"SELECT patient_key, ekey, sealed_id FROM members WHERE patient_key IN ({marks})"  # noqa: S608
            rows = {r[0]: (r[1], r[2]) for r in self._conn.execute(query, tuple(scored))}
        out = []
        for pkey, score in sorted(scored.items(), key=lambda kv: -kv[1]):
            if pkey not in rows or score < POSSIBLE_THRESHOLD:
                continue
            grade = "certain" if pkey in certain else grade_of(score)
            out.append(Candidate(self._open_id(pkey, rows[pkey][1]), self._resolve(rows[pkey][0]), score, grade))
        return out[:limit]

    def _match_locked(self, pkey: str, id_tokens: set[str], demo: dict[str, set[str]]) -> tuple[str, str, float | None]:
        by_ident = [k for k in self._by_identifiers(id_tokens) if k != pkey]
        if by_ident:
            return self._ekey_of(by_ident[0]), "identifier", None
        row = self._conn.execute("SELECT ekey FROM members WHERE patient_key=?", (pkey,)).fetchone()
        scores = {k: v for k, v in self._scores(demo).items() if k != pkey}
        best = max(scores.items(), key=lambda kv: kv[1], default=None)
        if best is not None and best[1] >= MATCH_THRESHOLD and self._birthdate_agrees(best[0], demo):
            return self._ekey_of(best[0]), "demographics", best[1]
        if row is not None:
            return str(row[0]), "self", None
        return uuid.uuid4().hex, "new", None

    def _by_identifiers(self, tokens: Iterable[str]) -> list[str]:
        listed = list(tokens)
        if not listed:
            return []
        rows = self._conn.execute(
            f"SELECT DISTINCT patient_key FROM id_tokens WHERE token IN ({','.join('?' * len(listed))})",  # noqa: S608
            listed,
        ).fetchall()
        return sorted(r[0] for r in rows)

    def _scores(self, demo: dict[str, set[str]]) -> dict[str, float]:
        scores: dict[str, float] = {}
        for name, tokens in demo.items():
            if not tokens:
                continue
            marks = ",".join("?" * len(tokens))
            query = f"SELECT DISTINCT patient_key FROM demo_tokens WHERE field=? AND token IN ({marks})"  # noqa: S608
            rows = self._conn.execute(query, (name, *tokens)).fetchall()
            for (pkey,) in rows:
                scores[pkey] = scores.get(pkey, 0.0) + WEIGHTS[name]
        return scores

    def _birthdate_agrees(self, pkey: str, demo: dict[str, set[str]]) -> bool:
        tokens = demo.get("birthdate") or set()
        rows = self._conn.execute(
            "SELECT token FROM demo_tokens WHERE patient_key=? AND field='birthdate'", (pkey,)
        ).fetchall()
        return bool(tokens & {r[0] for r in rows})

    def _ekey_of(self, pkey: str) -> str:
        row = self._conn.execute("SELECT ekey FROM members WHERE patient_key=?", (pkey,)).fetchone()
        return str(row[0])

    def _resolve(self, ekey: str) -> str:
        seen = set()
        while ekey not in seen:
            seen.add(ekey)
            row = self._conn.execute("SELECT survivor FROM key_links WHERE prior=?", (ekey,)).fetchone()
            if row is None:
                break
            ekey = str(row[0])
        return ekey

    def _seal_id(self, pkey: str, pid: str) -> bytes:
        self._sealer.prepare([TENANT_SUBJECT])
        return self._sealer.seal(TENANT_SUBJECT, "EmpiMember", pkey, 1, [("id", pid.encode())])[0]

    def _open_id(self, pkey: str, sealed: bytes) -> str:
        return self._sealer.open("EmpiMember", pkey, 1, "id", sealed).decode()

    def _id_tokens(self, patient: dict[str, Any]) -> set[str]:
        out = set()
        for ident in patient.get("identifier") or []:
            system, value = ident.get("system"), ident.get("value")
            if (
                isinstance(system, str)
                and isinstance(value, str)
                and value
                and not system.startswith(_UNTRUSTED_PREFIXES)
            ):
                out.add(self._pseudo.identifier_token("Patient", system, value.strip()))
        return out

    def _demo_tokens(self, patient: dict[str, Any]) -> dict[str, set[str]]:
        token = self._pseudo.token
        out: dict[str, set[str]] = {name: set() for name in WEIGHTS}
        for name in patient.get("name") or []:
            if isinstance(name.get("family"), str):
                out["family"].add(token("Patient", "family", name["family"]))
            given = name.get("given") or []
            if given and isinstance(given[0], str):
                out["given"].add(token("Patient", "given", given[0]))
        if isinstance(patient.get("birthDate"), str):
            out["birthdate"].add(token("Patient", "birthdate", patient["birthDate"]))
        if isinstance(patient.get("gender"), str):
            out["gender"].add(token("Patient", "gender", patient["gender"].casefold()))
        for telecom in patient.get("telecom") or []:
            digits = "".join(c for c in str(telecom.get("value", "")) if c.isdigit())
            if telecom.get("system") == "phone" and len(digits) >= 10:
                out["phone"].add(token("Patient", "phone", digits[-10:]))
        for addr in patient.get("address") or []:
            postal = str(addr.get("postalCode") or "")[:5]
            if postal:
                out["postal"].add(token("Patient", "postal", postal))
        return out
