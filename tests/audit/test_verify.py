"""Tampering with a stored trail is found, and ``verify`` names the segment, line and seq."""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path

import orjson
import pytest

from audit.chain import Signer, canonical
from audit.events import AuditAction, audit_event
from audit.sinks import SegmentFileSink
from audit.trail import AuditTrail
from audit.verify import verify
from fhirlake import audit_cli
from fhirlake.settings import Settings

SEED = bytes(range(32))
FORGER = bytes(range(100, 132))
SEGMENT = "segment-000001.log"
# 23 events with a checkpoint after every 5, and a final one: line n holds seq n.
CHECKPOINTS = (6, 12, 18, 24, 28)


def _event(i: int) -> dict[str, object]:
    return audit_event(AuditAction.READ, client_id="emr-1", resources=[f"Observation/o{i}"], site="test")


def write_trail(directory: Path, events: int = 23, segment_bytes: int = 64 << 20) -> Path:
    with AuditTrail(SegmentFileSink(directory, segment_bytes=segment_bytes), SEED, checkpoint_every=5) as trail:
        for i in range(events):
            trail.record(_event(i))
    return directory


@pytest.fixture
def trail_dir(tmp_path: Path) -> Path:
    return write_trail(tmp_path / "audit")


def lines_of(directory: Path, segment: str = SEGMENT) -> list[bytes]:
    return (directory / segment).read_bytes().splitlines()


def store(directory: Path, lines: list[bytes], segment: str = SEGMENT) -> None:
    (directory / segment).write_bytes(b"".join(line + b"\n" for line in lines))


def _seal(body: dict[str, object]) -> tuple[bytes, str]:
    data = canonical(body)
    digest = hashlib.sha256(data).hexdigest()
    return data[:-1] + b',"hash":"' + digest.encode() + b'"}', digest


def rechain(lines: list[bytes], start: int, resign: Signer | None = None) -> list[bytes]:
    """What a forger with write access does: recompute every hash from ``lines[start]`` on."""
    out = lines[:start]
    prev = orjson.loads(out[-1])["hash"] if out else "0" * 64
    for line in lines[start:]:
        record = orjson.loads(line)
        del record["hash"]
        record["prev"] = prev
        if "checkpoint" in record:
            claim = {**record["checkpoint"], "hash": prev, "upto": record["seq"] - 1}
            if resign is not None:
                claim["key_id"] = resign.key_id
                record["sig"] = resign.sign(canonical(claim)).decode()
            record["checkpoint"] = claim
        sealed, prev = _seal(record)
        out.append(sealed)
    return out


def test_an_untouched_trail_verifies(trail_dir: Path) -> None:
    report = verify(trail_dir)
    assert report.ok and report.first_error is None
    assert (report.records, report.checkpoints, report.head_seq, report.unsealed_records) == (23, 5, 28, 0)
    assert len(lines_of(trail_dir)) == 28


def _flip(line: bytes, position: int) -> bytes:
    return line[:position] + bytes([line[position] ^ 0x01]) + line[position + 1 :]


@pytest.mark.parametrize(
    "where",
    [
        lambda line: 0,  # the opening brace
        lambda line: 40,  # inside the event
        lambda line: line.index(b"Observation/") + 12,  # the resource id
        lambda line: line.index(b'"prev":"') + 20,
        lambda line: line.rindex(b'"seq":') + 6,  # the seq digit
        lambda line: len(line) - 30,  # inside the stored hash
        lambda line: len(line) - 1,  # the closing brace
    ],
    ids=["open", "event", "resource", "prev", "seq", "hash", "close"],
)
def test_a_flipped_byte_is_found_on_its_line(trail_dir: Path, where: Callable[[bytes], int]) -> None:
    lines = lines_of(trail_dir)
    lines[8] = _flip(lines[8], where(lines[8]))  # line 9 = seq 9, an event
    store(trail_dir, lines)
    error = verify(trail_dir).first_error
    assert error is not None
    assert (error.segment, error.line, error.seq) == (SEGMENT, 9, 9)
    assert error.kind in ("hash", "malformed")


def test_a_flipped_byte_in_a_checkpoint_is_found(trail_dir: Path) -> None:
    lines = lines_of(trail_dir)
    lines[11] = _flip(lines[11], lines[11].index(b'"sig":"') + 10)
    store(trail_dir, lines)
    error = verify(trail_dir).first_error
    assert error is not None and (error.line, error.seq, error.kind) == (12, 12, "hash")


def test_a_deleted_record_is_found_where_it_is_missing(trail_dir: Path) -> None:
    lines = lines_of(trail_dir)
    del lines[8]
    store(trail_dir, lines)
    error = verify(trail_dir).first_error
    assert error is not None and (error.line, error.seq, error.kind) == (9, 10, "seq")
    assert "expected seq 9" in error.detail and "missing" in error.detail


def test_an_inserted_copy_is_found_on_its_line(trail_dir: Path) -> None:
    lines = lines_of(trail_dir)
    lines.insert(8, lines[2])
    store(trail_dir, lines)
    error = verify(trail_dir).first_error
    assert error is not None and (error.line, error.seq, error.kind) == (9, 3, "seq")


def test_an_inserted_record_with_a_recomputed_chain_fails_the_next_checkpoint_signature(trail_dir: Path) -> None:
    lines = lines_of(trail_dir)
    forged = orjson.loads(lines[8])
    forged["event"]["entity"][0]["what"]["reference"] = "Observation/forged"
    lines.insert(8, canonical(forged))
    for n in range(9, len(lines)):  # renumber what follows, as a careful forger would
        record = orjson.loads(lines[n])
        record["seq"] = n + 1
        lines[n] = canonical(record)
    store(trail_dir, rechain(lines, 8))
    error = verify(trail_dir).first_error
    assert error is not None and (error.line, error.seq, error.kind) == (13, 13, "signature")


def test_swapped_records_are_found(trail_dir: Path) -> None:
    lines = lines_of(trail_dir)
    lines[7], lines[8] = lines[8], lines[7]
    store(trail_dir, lines)
    error = verify(trail_dir).first_error
    assert error is not None and (error.line, error.seq, error.kind) == (8, 9, "seq")


@pytest.mark.parametrize("keep", [12, 14, 27])
def test_cutting_the_tail_after_a_checkpoint_is_found_through_the_index(trail_dir: Path, keep: int) -> None:
    store(trail_dir, lines_of(trail_dir)[:keep])
    error = verify(trail_dir).first_error
    assert error is not None and error.kind == "truncated"
    assert (error.segment, error.line, error.seq) == (SEGMENT, keep + 1, keep + 1)
    assert "checkpoints.log" in error.detail


def test_a_forged_checkpoint_signature_is_found(trail_dir: Path) -> None:
    lines = lines_of(trail_dir)
    record = orjson.loads(lines[11])
    claim = record["checkpoint"]
    record["sig"] = Signer(FORGER).sign(canonical(claim)).decode()  # right key id, wrong key
    del record["hash"]
    lines[11] = _seal(record)[0]
    store(trail_dir, rechain(lines, 12))
    error = verify(trail_dir).first_error
    assert error is not None and (error.line, error.seq, error.kind) == (12, 12, "signature")


def test_a_rewritten_and_resigned_chain_fails_against_pinned_keys(trail_dir: Path) -> None:
    lines = lines_of(trail_dir)
    record = orjson.loads(lines[2])
    record["event"]["outcome"] = "8"
    lines[2] = canonical(record)
    forger = Signer(FORGER)
    store(trail_dir, rechain(lines, 2, resign=forger))
    keys = json.loads((trail_dir / "public_keys.json").read_text())
    trusted = {kid: base64.b64decode(entry["public_key"]) for kid, entry in keys.items()}
    keys[forger.key_id] = {"algorithm": "Ed25519", "public_key": base64.b64encode(forger.public_key).decode()}
    (trail_dir / "public_keys.json").write_text(json.dumps(keys))
    error = verify(trail_dir, public_keys=trusted).first_error
    assert error is not None and (error.line, error.seq, error.kind) == (6, 6, "key")


def test_a_changed_index_entry_is_found(trail_dir: Path) -> None:
    index = (trail_dir / "checkpoints.log").read_bytes().splitlines()
    entry = orjson.loads(index[1])
    entry["hash"] = "0" * 64
    index[1] = canonical(entry)
    (trail_dir / "checkpoints.log").write_bytes(b"\n".join(index) + b"\n")
    error = verify(trail_dir).first_error
    assert error is not None
    assert (error.segment, error.line, error.seq, error.kind) == ("checkpoints.log", 2, 12, "index")


def test_records_span_segments_and_a_deletion_names_the_segment(tmp_path: Path) -> None:
    directory = write_trail(tmp_path / "audit", events=40, segment_bytes=4096)
    report = verify(directory)
    assert report.ok and report.segments > 2 and report.records == 40
    second = "segment-000002.log"
    first_seq = orjson.loads(lines_of(directory, second)[0])["seq"]
    store(directory, lines_of(directory, second)[1:], second)
    error = verify(directory).first_error
    assert error is not None and (error.segment, error.line, error.seq, error.kind) == (second, 1, first_seq + 1, "seq")


def test_a_missing_segment_file_is_named(tmp_path: Path) -> None:
    directory = write_trail(tmp_path / "audit", events=40, segment_bytes=4096)
    (directory / "segment-000002.log").unlink()
    error = verify(directory).first_error
    assert error is not None and (error.segment, error.kind) == ("segment-000002.log", "segment")


def test_a_torn_last_line_is_not_an_error(trail_dir: Path) -> None:
    with (trail_dir / SEGMENT).open("ab") as f:
        f.write(b'{"event":{"action":"R"')  # a crash mid-write: never acknowledged
    report = verify(trail_dir)
    assert report.ok and report.torn_tail and report.records == 23


def test_a_missing_trail_is_not_ok(tmp_path: Path) -> None:
    report = verify(tmp_path / "nothing")
    assert not report.ok and report.first_error is not None and report.first_error.kind == "missing"


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir")


def _cli(*argv: str) -> tuple[int, dict[str, object]]:
    """``fhirlake audit …`` as fhirlake.cli runs it: settings from --data-dir, JSON on stdout."""
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    audit_cli.register(sub, _add_data_dir)
    args = parser.parse_args(argv)
    args.settings_of = lambda a: Settings(data_dir=Path(a.data_dir))
    out = io.StringIO()
    args.print = lambda doc: out.write(json.dumps(doc))
    with redirect_stdout(out):
        code = int(args.func(args))
    return code, json.loads(out.getvalue())


def test_cli_verify_exits_0_when_intact_and_1_naming_the_place_when_not(tmp_path: Path) -> None:
    directory = write_trail(tmp_path / "data" / "audit")
    code, doc = _cli("audit", "verify", "--data-dir", str(tmp_path / "data"))
    assert code == 0 and doc["ok"] is True and doc["records"] == 23
    lines = lines_of(directory)
    del lines[4]
    store(directory, lines)
    code, doc = _cli("audit", "verify", "--data-dir", str(tmp_path / "data"))
    assert code == 1 and doc["ok"] is False
    assert doc["first_error"] == {
        "segment": SEGMENT,
        "line": 5,
        "seq": 6,
        "kind": "seq",
        "detail": "expected seq 5, found 6: records are missing",
    }
