"""Strict validation of an HL7 v2 message with hl7apy, for channels that ask for it.

The hot-path reader accepts anything well-framed; a channel with `strict_validation`
also checks every segment's fields against the data types of the message's own version
(MSH-12) and the message against its structure (MSH-9.3, or MSH-9.1_MSH-9.2). The first
problem becomes an `AckError` naming the segment, its occurrence and the field, so the
sender gets an AE whose ERR points at what to fix. Error texts never carry field values
(they may be PHI): they name the place and the broken rule only.

hl7apy costs milliseconds per message, which is why this is per channel and off by default.
"""

from __future__ import annotations

import re
from typing import Any

from hl7apy import SUPPORTED_LIBRARIES, load_reference
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_field, parse_message, parse_segment
from hl7apy.validation import Validator

from engine.errors import HL7ReadError
from engine.hl7.ack import AckError
from engine.hl7.reader import Message, Segment, parse

__all__ = ["strict_problem"]

_STRICT = VALIDATION_LEVEL.STRICT
# hl7apy error texts we turn into a location. Values in them are dropped, never echoed.
_VALUE_TYPE = re.compile(r"is not an HL7 valid (\w+) value")
_CHILD = re.compile(r"(Missing required child|Child limit exceeded) (\w+)\.(\w+)")
_FIELD_NAME = re.compile(r"^([A-Z][A-Z0-9]{2})_(\d+)$")
_DATATYPE = re.compile(r"Datatype \w+ is not correct for (\w+)\.([A-Z][A-Z0-9]{2})_(\d+)")
_SEGMENT_NAME = re.compile(r"^[A-Z][A-Z0-9]{2}$")


def strict_problem(raw: bytes | str) -> AckError | None:
    """The first way `raw` breaks its HL7 version's definitions, or None when it conforms.

    Z-segments are allowed anywhere (they are site-defined). Versions hl7apy does not know
    are reported on MSH-12 (HL7 error 203).
    """
    try:
        msg = parse(raw)
    except HL7ReadError as exc:
        return AckError("MSH", 1, None, 100, f"cannot read message: {exc}")
    version = (msg.version or "").strip()
    if version not in SUPPORTED_LIBRARIES:
        return AckError("MSH", 1, 12, 203, f"strict validation: HL7 version {version or '(none)'}"
                        " in MSH-12 is not supported")
    encoding = _encoding_chars(msg)
    occurrences: dict[str, int] = {}
    for seg in msg.segments():
        occurrences[seg.name] = occurrences.get(seg.name, 0) + 1
        if seg.name.startswith("Z"):
            continue
        problem = _segment_problem(seg, occurrences[seg.name], version, encoding)
        if problem is not None:
            return problem
    return _structure_problem(msg, version, occurrences)


def _encoding_chars(msg: Message) -> dict[str, str]:
    enc = msg.encoding
    chars = {"FIELD": enc.field, "COMPONENT": enc.component or "^",
             "REPETITION": enc.repetition or "~", "ESCAPE": enc.escape or "\\",
             "SUBCOMPONENT": enc.subcomponent or "&", "SEGMENT": "\r", "GROUP": "\r"}
    return chars


def _segment_problem(seg: Segment, occurrence: int, version: str,
                     encoding: dict[str, str]) -> AckError | None:
    try:
        parse_segment(seg.raw, version=version, encoding_chars=encoding, validation_level=_STRICT)
        return None
    except (HL7apyException, ValueError, TypeError, AttributeError, KeyError, IndexError):
        pass
    try:
        load_reference(seg.name, "Segment", version)
    except (HL7apyException, KeyError):
        return AckError(seg.name, occurrence, None, 100, f"strict validation: segment "
                        f"{seg.name} is not defined in HL7 {version}")
    for number in range(1, seg.field_count + 1):
        if seg.name == "MSH" and number <= 2:
            continue
        text = seg.field(number)
        if not text:
            continue
        try:
            parse_field(text, name=f"{seg.name}_{number}", version=version,
                        encoding_chars=encoding, validation_level=_STRICT)
        except (HL7apyException, ValueError, TypeError, AttributeError, KeyError,
                IndexError) as exc:
            return _field_error(seg.name, occurrence, number, version, exc)
    return AckError(seg.name, occurrence, None, 100,
                    f"strict validation: segment {seg.name} is not defined in HL7 {version} "
                    "or has more fields than its definition")


def _field_error(segment: str, occurrence: int, number: int, version: str,
                 exc: BaseException) -> AckError:
    where = f"{segment}-{number}"
    found = _VALUE_TYPE.search(str(exc))
    if found:
        return AckError(segment, occurrence, number, 102,
                        f"strict validation: {where} is not a valid {found.group(1)} value")
    if "max limit" in str(exc) or "unknown Element" in str(exc):
        return AckError(segment, occurrence, number, 102,
                        f"strict validation: {where} is not defined in HL7 {version}")
    return AckError(segment, occurrence, number, 102,
                    f"strict validation: {where} does not match its HL7 {version} data type")


def _structure_problem(msg: Message, version: str,
                       occurrences: dict[str, int]) -> AckError | None:
    text = "\r".join(seg.raw for seg in msg.segments())
    try:
        parsed: Any = parse_message(text, validation_level=_STRICT, find_groups=True)
        Validator.validate(parsed)
        return None
    except (HL7apyException, ValueError, TypeError, AttributeError, KeyError,
            IndexError) as exc:
        return _structure_error(str(exc), version, occurrences)


def _structure_error(text: str, version: str, occurrences: dict[str, int]) -> AckError:
    found = _DATATYPE.search(text)
    if found:
        segment, number = found.group(2), int(found.group(3))
        return AckError(segment, 1, number, 102, f"strict validation: {segment}-{number} "
                        f"does not match its HL7 {version} data type")
    found = _CHILD.search(text)
    if found:
        missing = found.group(1).startswith("Missing")
        parent, child = found.group(2), found.group(3)
        field = _FIELD_NAME.match(child)
        if field:
            segment, number = field.group(1), int(field.group(2))
            rule = "is required" if missing else "repeats more often than allowed"
            return AckError(segment, 1 if segment in occurrences else None, number,
                            101 if missing else 102,
                            f"strict validation: {segment}-{number} {rule} in HL7 {version}")
        if _SEGMENT_NAME.match(child):
            rule = "is missing" if missing else "repeats more often than allowed"
            return AckError(child, None, None, 100,
                            f"strict validation: required segment {child} {rule} in "
                            f"{parent} (HL7 {version})")
        rule = "is missing" if missing else "repeats more often than allowed"
        return AckError("", None, None, 100,
                        f"strict validation: group {child} {rule} in {parent} (HL7 {version})")
    return AckError("MSH", 1, 9, 100, f"strict validation: segments do not follow the "
                    f"structure MSH-9 names in HL7 {version}")
