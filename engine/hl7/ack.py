"""Build HL7 v2 acknowledgements (ACK) for an inbound message, parsed or not.

The ACK's MSH mirrors the inbound one: sending and receiving application/facility swapped,
processing id, version and character set kept, MSH-9 ``ACK^<trigger>^ACK``, a fresh
control id and the current time. MSA echoes the inbound MSH-10. With an `AckError`, an ERR
segment names the location and the HL7 table 0357 error code: ERR-2/3/4/8 for v2.5 and
later, ERR-1 for the older versions that only have that field.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from engine.errors import ChargeBridgeError, HL7ReadError
from engine.hl7.encoding import DEFAULT_ENCODING, Encoding, escape
from engine.hl7.reader import Message, parse

__all__ = ["ACK_CODES", "ERROR_CODES", "AckError", "build_ack"]

ACK_CODES = frozenset({"AA", "AE", "AR", "CA", "CE", "CR"})

# HL7 table 0357, message error condition codes.
ERROR_CODES: dict[int, str] = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    206: "Application record locked",
    207: "Application internal error",
}

_MSA_TEXT_LIMIT = 80  # MSA-3 is ST(80) in v2.5


@dataclass(frozen=True, slots=True)
class AckError:
    """What an ERR segment reports: where (segment, its sequence, field) and why.

    `code` is an HL7 table 0357 code (e.g. 101 required field missing, 207 application
    internal error); `text` is the user message (ERR-8) and must not contain PHI.
    """

    segment: str = ""
    sequence: int | None = None
    field: int | None = None
    code: int = 207
    text: str = ""
    severity: str = "E"


# An ACK's own MSH-10: random per process, then counted (os.urandom per ACK is a system
# call on the hot path). Sixteen hex characters, unique across processes and restarts.
_ID_PREFIX = os.urandom(4).hex().upper()
_id_counter = itertools.count(1)


def _new_control_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter) & 0xFFFFFFFF:08X}"


_stamp: tuple[int, str] = (0, "")


def _timestamp() -> str:
    """Now as an HL7 timestamp; formatted once per second (ACKs are built per message)."""
    global _stamp
    second = int(time.time())
    if _stamp[0] != second:
        _stamp = (second, datetime.fromtimestamp(second, UTC).strftime("%Y%m%d%H%M%S+0000"))
    return _stamp[1]


def _inbound_header(raw: bytes | None) -> Message | None:
    """Best effort: read just the MSH line of bytes that failed to parse as a whole."""
    if not raw:
        return None
    head = raw.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"MSH"):
        return None
    end = len(head)
    for sep in (b"\r", b"\n"):
        pos = head.find(sep)
        if 0 <= pos < end:
            end = pos
    line = head[:end].decode("utf-8", errors="replace")
    try:
        return parse(line)
    except HL7ReadError:
        return None


def _version_at_least_25(version: str) -> bool:
    parts = version.split(".")
    try:
        major, minor = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return True
    return (major, minor) >= (2, 5)


def _err_segment(error: AckError, enc: Encoding, version: str) -> str:
    fs, cs, ss = enc.field, enc.component or "^", enc.subcomponent or "&"
    name = ERROR_CODES.get(error.code, "")
    sequence = "" if error.sequence is None else str(error.sequence)
    field = "" if error.field is None else str(error.field)
    location = cs.join((escape(error.segment, enc), sequence, field)).rstrip(cs)
    text = escape(error.text, enc)
    if _version_at_least_25(version):
        code = cs.join((str(error.code), escape(name, enc), "HL70357"))
        fields = ["ERR", "", location, code, escape(error.severity, enc), "", "", "", text]
    else:
        # v2.3/2.4 ERR-1 (ELD): segment^sequence^field^code&text&table
        code = ss.join((str(error.code), escape(name, enc), "HL70357"))
        eld = cs.join((escape(error.segment, enc), sequence, field, code))
        fields = ["ERR", eld]
    return fs.join(fields)


def build_ack(
    msg: Message | None,
    code: str,
    *,
    text: str = "",
    error: AckError | None = None,
    raw: bytes | None = None,
    control_id: str | None = None,
) -> str:
    """The ACK for `msg` (or, when it could not be parsed, for the MSH found in `raw`).

    `code` is AA/AE/AR or enhanced CA/CE/CR; `text` goes to MSA-3 (cut to 80 characters);
    `control_id` is the ACK's own MSH-10 (generated when None). The result uses the inbound
    delimiters, separates segments with \\r and ends with \\r; encode it with `msg.codec`
    (UTF-8 when there is no message).
    """
    if code not in ACK_CODES:
        raise ChargeBridgeError(f"ACK code {code!r} is not one of {sorted(ACK_CODES)}")
    inbound = msg if msg is not None else _inbound_header(raw)
    enc = inbound.encoding if inbound is not None else DEFAULT_ENCODING
    fs, cs = enc.field, enc.component or "^"
    ack_id = escape(control_id, enc) if control_id is not None else _new_control_id()
    if inbound is not None:
        msh = inbound.msh
        trigger = msh.get(9, 2)
        version = msh.field(12) or "2.5.1"
        header = [
            "MSH",
            msh.field(2),
            msh.field(5),
            msh.field(6),
            msh.field(3),
            msh.field(4),
            _timestamp(),
            "",
            cs.join(("ACK", escape(trigger, enc), "ACK")) if trigger else "ACK",
            ack_id,
            msh.field(11) or "P",
            version,
        ]
        charset = msh.field(18)
        if charset:
            header.extend(["", "", "", "", "", charset])
        echoed = msh.field(10)
        version_id = inbound.version or "2.5.1"
    else:
        header = ["MSH", enc.msh2, "CHARGEBRIDGE", "", "", "", _timestamp(), "", "ACK", ack_id]
        header += ["P", "2.5.1"]
        echoed = ""
        version_id = "2.5.1"
    msa = ["MSA", code, echoed]
    if text:
        msa.append(escape(text[:_MSA_TEXT_LIMIT], enc))
    segments = [fs.join(header), fs.join(msa)]
    if error is not None:
        segments.append(_err_segment(error, enc, version_id))
    return "\r".join(segments) + "\r"
