"""Reading HL7 v2 ER7 with python-hl7: framing, line ends, BOMs, and safe field access."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import cache

import hl7
from hl7.containers import Message, Segment

from ingest.emr_adapters.errors import AdapterError, UnsupportedMessageError

_MLLP = (b"\x0b", b"\x1c\x0d", b"\x1c")
SUPPORTED_VERSIONS = ("2.3", "2.4", "2.5", "2.6", "2.7", "2.8")


@dataclass(frozen=True, slots=True)
class Parsed:
    message: Message
    code: str  # e.g. ADT
    trigger: str  # e.g. A01
    version: str
    control_id: str
    facility: str  # MSH-4 namespace (or MSH-3), the scope of local identifiers


def decode(payload: bytes) -> str:
    """ER7 text with ``\\r`` segment ends: MLLP framing, BOMs and CR/LF/CRLF handled."""
    data = payload.strip(b"".join(_MLLP) + b" \t\r\n").removeprefix(b"\xef\xbb\xbf")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # HL7 v2 default character set (MSH-18 empty) is ASCII/8859-1
    text = text.lstrip("\ufeff")
    lines = text.replace("\r\n", "\r").replace("\n", "\r").split("\r")
    return "\r".join(line for line in lines if line.strip())


def parse(payload: bytes) -> Parsed:
    """The parsed message; AdapterError when it is not HL7 v2, Unsupported for other versions."""
    text = decode(payload)
    if not text.startswith("MSH") or len(text) < 8:
        raise AdapterError("the payload is not an HL7 v2 message (no MSH segment)", where="MSH")
    try:
        message = hl7.parse(text)
        msh = message.segment("MSH")
    except (hl7.HL7Exception, KeyError, IndexError, ValueError):
        raise AdapterError("the HL7 v2 message cannot be parsed", where="MSH") from None
    version = field(msh, 12)
    if not version.startswith(SUPPORTED_VERSIONS):
        raise UnsupportedMessageError("HL7 v2 version outside 2.3-2.8 (MSH-12)", where="MSH-12")
    code, trigger = field(msh, 9, comp=1), field(msh, 9, comp=2)
    if not code:
        raise AdapterError("MSH-9 (message type) is empty", where="MSH-9")
    facility = field(msh, 4) or field(msh, 3) or "unknown"
    return Parsed(message, code.upper(), trigger.upper(), version, field(msh, 10), facility)


def field(segment: Segment, number: int, rep: int = 1, comp: int = 1, sub: int = 1) -> str:
    """One value (unescaped, stripped), or "" when absent."""
    try:
        value = segment.extract_field(1, number, rep, comp, sub)
    except (IndexError, KeyError, ValueError, hl7.HL7Exception):
        return ""
    if not value:
        return ""
    text = str(value)
    if "\\" in text:
        with contextlib.suppress(ValueError, IndexError, hl7.HL7Exception):
            text = _unescaper().unescape(text)
    return text.strip()


@cache
def _unescaper() -> Message:
    return hl7.parse("MSH|^~\\&|X")


def repetitions(segment: Segment, number: int) -> int:
    """How many repetitions field ``number`` has (0 when absent or empty)."""
    try:
        value = segment[number]
    except IndexError:
        return 0
    if not str(value):
        return 0
    return len(value) if isinstance(value, hl7.Field) else 1


def segments(message: Message, name: str) -> list[Segment]:
    return [s for s in message if str(s[0]) == name]
