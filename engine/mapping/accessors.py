"""Raw value accessors: HL7 paths and FHIRPath expressions compiled once into closures.

An accessor is `get(scope) -> value | None` (scalar) or `get(scope) -> list` (many values).
For HL7 the scope is a parsed Message, an FT1 group Scope, or one record's segment; for
FHIR it is the resource context dict {"ChargeItem": {...}, "Patient": {...}, ...}.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import fhirpathpy

from engine.hl7.encoding import unescape
from engine.hl7.path import ALL, Path, PathSyntaxError, compile_path
from engine.mapping.spec import did_you_mean

__all__ = [
    "FHIR_RESOURCES",
    "HL7_SEGMENTS",
    "MESSAGE_SEGMENTS",
    "ItemScope",
    "LineSource",
    "PathError",
    "fast_first",
    "fhir_accessor",
    "hl7_accessor",
    "path_segments",
]

Accessor = Callable[[Any], Any]


class PathError(ValueError):
    """A path does not compile or names something that does not exist; text has a hint."""


# Segments a DFT^P03 (and ADT) can carry; anything else must be a Z-segment.
HL7_SEGMENTS = {
    "MSH", "SFT", "EVN", "PID", "PD1", "ROL", "NK1", "PV1", "PV2", "DB1", "ORC", "OBR",
    "OBX", "NTE", "FT1", "PR1", "DG1", "DRG", "GT1", "IN1", "IN2", "IN3", "ACC", "AL1",
    "MRG", "TQ1", "TQ2", "CTI", "ZPI", "MSA", "ERR", "UB1", "UB2", "PDA", "PRB", "GOL",
}
# Segments that occur once per message (not per FT1 group): values read from them are
# computed once per message and shared by every charge of that message.
MESSAGE_SEGMENTS = {
    "MSH", "SFT", "EVN", "PID", "PD1", "NK1", "PV1", "PV2", "DB1", "GT1", "IN1", "IN2",
    "IN3", "ACC", "MRG", "DRG", "UB1", "UB2", "PDA",
}
FHIR_RESOURCES = {
    "ChargeItem", "Patient", "Encounter", "Coverage", "Practitioner", "PractitionerRole",
    "Organization", "Location", "Account", "Payor",
}

_SEGMENT_NAME = re.compile(r"^\s*([A-Z][A-Z0-9]{2})")
_FHIR_HEAD = re.compile(r"^\s*([A-Za-z][A-Za-z0-9]*)")


class LineSource:
    """An FT1 group prepared once per line: its segments indexed by name.

    Reads behave exactly like the reader's Scope (the group's own segments first, else the
    message's); indexing once saves a scan of the group on every path read.
    """

    __slots__ = ("message", "own")

    def __init__(self, scope: Any) -> None:
        own: dict[str, list[Any]] = {}
        for seg in scope.segments():
            found = own.get(seg.name)
            if found is None:
                own[seg.name] = [seg]
            else:
                found.append(seg)
        self.own = own
        self.message = scope.message

    def _named(self, name: str) -> list[Any]:
        return self.own.get(name) or self.message._named(name)

    def segments(self, name: str | None = None) -> list[Any]:
        """The group's segments with this name (falling back to the message's)."""
        if name is None:
            return [seg for segs in self.own.values() for seg in segs]
        return list(self._named(name))

    def get(self, path: str) -> str | None:
        """The first value at an HL7 path (for `hl7('FT1-6')` in expressions)."""
        return compile_path(path).first(self)


class ItemScope:
    """One segment seen as the only segment of its name (`each: IN1` reads one IN1)."""

    __slots__ = ("name", "parent", "segment")

    def __init__(self, segment: Any, parent: Any) -> None:
        self.segment = segment
        self.name = segment.name
        self.parent = parent

    def _named(self, name: str) -> list[Any]:
        return [self.segment] if name == self.name else self.parent._named(name)


def split_alternatives(text: str) -> list[str]:
    """`FT1-25.1 | FT1-7.1` -> ["FT1-25.1", "FT1-7.1"]."""
    return [part.strip() for part in text.split("|")]


def path_segments(text: str) -> list[str]:
    """The segment names an HL7 path (with alternatives) reads."""
    names = []
    for part in split_alternatives(text):
        match = _SEGMENT_NAME.match(part)
        if match:
            names.append(match.group(1))
    return names


def check_hl7_path(part: str) -> None:
    """Raise PathError for a bad path or an unknown (non-Z) segment name."""
    if not part:
        raise PathError("empty path between '|' alternatives")
    try:
        compile_path(part)
    except PathSyntaxError as exc:
        raise PathError(str(exc)) from None
    segment = part.strip()[:3]
    if segment not in HL7_SEGMENTS and not segment.startswith("Z"):
        raise PathError(f"unknown segment {segment!r} in path {part!r}"
                        f"{did_you_mean(segment, HL7_SEGMENTS)}; custom segments start with Z")


def fast_first(path: Path) -> Accessor:
    """`path.first` specialised for the common single-value path (first segment, one
    repetition): the same result with fewer calls. Other paths use `path.first` itself.
    """
    if path.seg_index != 0 or path.rep == ALL or (path.seg == "MSH" and path.field <= 2):
        return path.first
    seg_name, number, rep, comp, sub = path.seg, path.field, path.rep, path.comp, path.sub

    # `_line` lets the compiler use this closure directly as a field getter.
    def first(source: Any, _line: Any = None) -> str | None:
        segs = source._named(seg_name)
        if not segs:
            return None
        seg = segs[0]
        value = seg.field(number)
        if not value:
            return None
        enc = seg.encoding
        sep = enc.repetition
        if sep and sep in value:
            reps = value.split(sep)
            if rep >= len(reps):
                return None
            value = reps[rep]
        elif rep:
            return None
        sep = enc.component
        if sep and sep in value:
            parts = value.split(sep)
            value = parts[comp] if comp < len(parts) else ""
        elif comp:
            return None
        sep = enc.subcomponent
        if sep and sep in value:
            parts = value.split(sep)
            value = parts[sub] if sub < len(parts) else ""
        elif sub:
            return None
        if not value or value == '""':
            return None
        if enc.escape and enc.escape in value:
            return unescape(value, enc, seg.codec) or None
        return value

    first.takes_line = True  # type: ignore[attr-defined]
    return first


def hl7_accessor(text: str, many: bool) -> tuple[Accessor, list[str]]:
    """Compile `text` (alternatives allowed); returns (accessor, alternative texts).

    Scalar: the first non-empty value of the first alternative that has one. Many: every
    value of the first alternative that yields any.
    """
    parts = split_alternatives(text)
    for part in parts:
        check_hl7_path(part)
    compiled = [compile_path(part) for part in parts]
    if many:
        alls = [p.all for p in compiled]
        if len(alls) == 1:
            return alls[0], parts

        def get_many(scope: Any) -> list[str]:
            for get in alls:
                values = get(scope)
                if values:
                    return values
            return []

        return get_many, parts
    firsts = [fast_first(p) for p in compiled]
    if len(firsts) == 1:
        return firsts[0], parts

    def get_first(scope: Any, _line: Any = None) -> str | None:
        for get in firsts:
            value = get(scope)
            if value is not None:
                return value
        return None

    get_first.takes_line = True  # type: ignore[attr-defined]
    return get_first, parts


def fhir_resource_type(text: str) -> str:
    """The resource type a FHIRPath starts with (`ChargeItem.code` -> ChargeItem)."""
    match = _FHIR_HEAD.match(text)
    if not match or match.group(1) not in FHIR_RESOURCES:
        head = match.group(1) if match else text.strip()[:20]
        raise PathError(f"a FHIR path starts with a resource type, got {head!r}"
                        f"{did_you_mean(head, FHIR_RESOURCES)}")
    return match.group(1)


def fhir_accessor(text: str, many: bool) -> tuple[Accessor, list[str]]:
    """Compile a FHIRPath once; it is evaluated on the named resource(s) of the context.

    `|` is FHIRPath's union: the first value of the union is the first alternative's.
    """
    resource_type = fhir_resource_type(text)
    try:
        compiled = fhirpathpy.compile(text.strip())
    except Exception as exc:  # fhirpathpy raises bare exceptions from its ANTLR parser
        raise PathError(f"FHIRPath {text!r} does not parse ({exc})") from None

    def values(context: Any) -> list[Any]:
        resource = context.get(resource_type) if isinstance(context, dict) else None
        if resource is None:
            return []
        if isinstance(resource, list):
            out: list[Any] = []
            for item in resource:
                out += compiled(item, None)
            return [v for v in out if v is not None and v != ""]
        return [v for v in compiled(resource, None) if v is not None and v != ""]

    if many:
        return values, [text]

    def first(context: Any) -> Any:
        found = values(context)
        return found[0] if found else None

    return first, [text]
