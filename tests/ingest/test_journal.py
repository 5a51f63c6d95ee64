"""Journal housekeeping: idempotency keys expire, hot bodies are pruned once in the lake."""

from __future__ import annotations

import time
from pathlib import Path

from ingest.journal import Journal


def test_idempotency_keys_expire_after_their_ttl(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db", idempotency_ttl_s=1)
    journal._next_expiry = time.time() + 3600  # hold expiry while the key is written
    old = int((time.time() - 10) * 1_000_000)
    journal.submit(lambda ctx: ctx.remember_response("k", "h", 200, b"[]", old)).result()
    assert journal.idempotent_response("k") is not None
    journal._next_expiry = 0.0
    journal.submit(lambda ctx: None).result()  # any later group expires it
    assert journal.idempotent_response("k") is None
    journal.close()


def test_prune_only_touches_rows_in_the_lake_and_past_retention(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db")
    now = int(time.time() * 1_000_000)

    def write(stamp: int, rid: str) -> None:
        def job(ctx) -> None:  # type: ignore[no-untyped-def]
            ctx.write_versions([("Patient", rid, 1, ctx.pending_seq, stamp, 0, None, *([None] * 6), b"{}", None)])
            ctx.allocate_seq(1, stamp)

        journal.submit(job).result()

    write(now - 10_000_000, "old")
    write(now, "new")
    assert journal.prune_bodies(upto_seq=0, older_than_us=now - 1) == 0  # nothing in the lake yet
    assert journal.prune_bodies(upto_seq=2, older_than_us=now - 1) == 1
    assert journal.version("Patient", "old", 1)[13] is None  # type: ignore[index]
    assert journal.version("Patient", "new", 1)[13] == b"{}"  # type: ignore[index]
    assert journal.prune_bodies(upto_seq=2, older_than_us=now - 1) == 0  # watermark: no rescans
    journal.close()
