"""HL7 v2 (ER7): ADT, ORU^R01 and VXU^V04, versions 2.3-2.8, answered with an ACK or a NACK.

Parsing is python-hl7's; mapping is ``patient`` (PID, MRG) and ``clinical``
(PV1, OBR/OBX, RXA). Resource ids are keyed hashes of the source keys (MRN,
visit number, filler order number), so a later message about the same patient
or visit updates the same resources and a replay corrects them in place.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from hl7.containers import Message, Segment

from ingest.emr_adapters import AdapterContext, Merge, Normalized
from ingest.emr_adapters.bundle import entry_for, strip_bom, transaction
from ingest.emr_adapters.errors import AdapterError, UnsupportedMessageError
from ingest.emr_adapters.hl7v2.clinical import Notes, to_encounter, to_immunization, to_report
from ingest.emr_adapters.hl7v2.message import Parsed, field, parse, repetitions, segments
from ingest.emr_adapters.hl7v2.patient import cx_identifier, patient_id, to_patient
from ingest.errors import IngestError

ER7 = "x-application/hl7-v2+er7"
ADT_PATIENT_VISIT = frozenset({"A01", "A02", "A03", "A04", "A05", "A06", "A07", "A08", "A11", "A13"})
ADT_PATIENT_ONLY = frozenset({"A28", "A31"})


class Hl7v2Adapter:
    name = "hl7v2"
    version = "1.0.0"

    def recognizes(self, payload: bytes, content_type: str | None) -> bool:
        return strip_bom(payload.lstrip(b"\x0b \r\n")).startswith(b"MSH")

    def normalize(self, payload: bytes, context: AdapterContext) -> Normalized:
        parsed = parse(payload)
        notes = Notes()
        merges: list[Merge] = []
        message_type = f"{parsed.code}^{parsed.trigger}"
        if parsed.code == "ADT" and parsed.trigger in ADT_PATIENT_VISIT | ADT_PATIENT_ONLY:
            resources = self._adt(parsed, context, notes)
        elif parsed.code == "ADT" and parsed.trigger == "A40":
            resources = self._merge(parsed, context, merges)
        elif parsed.code == "ORU" and parsed.trigger == "R01":
            resources = self._oru(parsed, context, notes)
        elif parsed.code == "VXU" and parsed.trigger == "V04":
            resources = self._vxu(parsed, context, notes)
        else:
            raise UnsupportedMessageError(f"HL7 v2 message type {message_type} is not mapped", where="MSH-9")
        entries = [entry_for(r) for r in resources]
        bundle = transaction(entries, adapter=self.name, version=self.version, raw=payload, received=context.received)
        return Normalized(bundle, notes.items, merges, parsed.control_id or None)

    def reply(self, payload: bytes, error: IngestError | None) -> tuple[bytes, str] | None:
        code = "AA" if error is None else ("AR" if isinstance(error, UnsupportedMessageError) else "AE")
        text = "" if error is None else _escape(error.issues[0].diagnostics if error.issues else error.message)[:200]
        try:
            message: Message | None = parse(payload).message
        except AdapterError:
            message = None
        return ack(message, code, text), ER7

    def _patient(self, parsed: Parsed, context: AdapterContext) -> dict[str, Any]:
        pids = segments(parsed.message, "PID")
        if not pids:
            raise AdapterError("the message has no PID segment", where="PID")
        return to_patient(pids[0], parsed, context)

    def _adt(self, parsed: Parsed, context: AdapterContext, notes: Notes) -> list[dict[str, Any]]:
        patient = self._patient(parsed, context)
        out = [patient]
        pv1 = segments(parsed.message, "PV1")
        if parsed.trigger in ADT_PATIENT_VISIT and pv1 and (field(pv1[0], 2) or field(pv1[0], 19)):
            out.append(to_encounter(pv1[0], parsed, f"Patient/{patient['id']}", context, notes))
        return out

    def _merge(self, parsed: Parsed, context: AdapterContext, merges: list[Merge]) -> list[dict[str, Any]]:
        survivor = self._patient(parsed, context)
        mrgs = segments(parsed.message, "MRG")
        if not mrgs:
            raise AdapterError("ADT^A40 without an MRG segment", where="MRG")
        prior_ids = [i for r in range(1, repetitions(mrgs[0], 1) + 1) if (i := cx_identifier(mrgs[0], 1, r, parsed))]
        if not prior_ids:
            raise AdapterError("MRG-1 (prior patient identifier list) is empty", where="MRG-1")
        prior = patient_id(prior_ids, context)
        if prior == survivor["id"]:
            raise AdapterError("MRG-1 names the surviving patient itself", where="MRG-1")
        survivor["link"] = [{"other": {"reference": f"Patient/{prior}"}, "type": "replaces"}]
        merges.append(Merge(survivor=str(survivor["id"]), prior=prior))
        return [survivor]

    def _oru(self, parsed: Parsed, context: AdapterContext, notes: Notes) -> list[dict[str, Any]]:
        patient = self._patient(parsed, context)
        ref = f"Patient/{patient['id']}"
        out = [patient]
        for obr, obxs in _groups(parsed.message, "OBR", "OBX"):
            out.extend(to_report(obr, obxs, parsed, ref, context, notes))
        if len(out) == 1:
            raise AdapterError("ORU^R01 without an OBR segment", where="OBR")
        return out

    def _vxu(self, parsed: Parsed, context: AdapterContext, notes: Notes) -> list[dict[str, Any]]:
        patient = self._patient(parsed, context)
        ref = f"Patient/{patient['id']}"
        out = [patient]
        order = parsed.control_id
        for index, segment in enumerate(parsed.message, start=1):
            name = str(segment[0])
            if name == "ORC":
                order = field(segment, 3) or field(segment, 2) or parsed.control_id
            elif name == "RXA":
                imm = to_immunization(segment, index, order, parsed, ref, context, notes)
                if imm is not None:
                    out.append(imm)
        if len(out) == 1:
            raise AdapterError("VXU^V04 without a usable RXA segment", where="RXA")
        return out


def _groups(message: Message, head: str, member: str) -> list[tuple[Segment, list[Segment]]]:
    groups: list[tuple[Segment, list[Segment]]] = []
    for segment in message:
        name = str(segment[0])
        if name == head:
            groups.append((segment, []))
        elif name == member and groups:
            groups[-1][1].append(segment)
    return groups


def _escape(text: str) -> str:
    return (
        text.replace("\\", "\\E\\")
        .replace("|", "\\F\\")
        .replace("^", "\\S\\")
        .replace("&", "\\T\\")
        .replace("~", "\\R\\")
    )


def ack(message: Message | None, code: str, text: str) -> bytes:
    """An ACK (MSH, MSA, and ERR for a NACK) answering ``message`` (or a bare one when it was unreadable)."""
    control = uuid.uuid4().hex[:20]
    if message is not None:
        reply = str(message.create_ack(code, message_id=control, application="FHIRLAKE", facility="FHIRLAKE"))
        orig = field(message.segment("MSH"), 10)
    else:
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        reply = f"MSH|^~\\&|FHIRLAKE|FHIRLAKE|||{stamp}||ACK|{control}|P|2.5\rMSA|{code}|"
        orig = ""
    segs = reply.rstrip("\r").split("\r")
    segs = [s for s in segs if not s.startswith("MSA")] + [f"MSA|{code}|{orig}" + (f"|{text}" if text else "")]
    if code != "AA":
        segs.append(f"ERR||||E|||{text}" if text else "ERR||||E")
    return ("\r".join(segs) + "\r").encode()
