"""The path syntax mappings use to address HL7 v2 values, compiled once and evaluated fast.

Grammar: ``SEG[i]-F[r].C.S`` where SEG is a segment name (``PID``, ``FT1``, ``ZVN``), ``[i]``
picks the i-th segment of that name (1-based, ``[*]`` = every one), F is the field number,
``[r]`` the repetition (1-based, ``[*]`` = every one), C the component, S the subcomponent.

Omitted parts default to 1: ``PID-3`` means ``PID[1]-3[1].1.1``, i.e. the first component
(and its first subcomponent) of the first repetition of PID-3 in the first PID. That is what
most engines do and it keeps ``FT1-11`` = the amount even when a sender writes ``125.00&USD``.
For MSH, fields are numbered as the standard does: MSH-1 is the field separator, MSH-2 the
encoding characters (both returned verbatim), MSH-3 the sending application.

Values are returned with escape sequences decoded. Empty values and the HL7 explicit null
``""`` count as absent.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol

from engine.errors import ChargeBridgeError
from engine.hl7.encoding import unescape

if TYPE_CHECKING:
    from engine.hl7.reader import Segment

__all__ = ["Path", "PathSyntaxError", "SegmentSource", "compile_path"]

_PATH = re.compile(
    r"""
    (?P<seg>[A-Z][A-Z0-9]{2})
    (?:\[(?P<segidx>\*|[0-9]+)\])?
    -(?P<field>[0-9]+)
    (?:\[(?P<rep>\*|[0-9]+)\])?
    (?:\.(?P<comp>[0-9]+)
        (?:\.(?P<sub>[0-9]+))?
    )?
    """,
    re.VERBOSE,
)

ALL = -1  # marker for [*]


class PathSyntaxError(ChargeBridgeError):
    """An HL7 path does not follow the ``SEG[i]-F[r].C.S`` syntax."""


class SegmentSource(Protocol):
    """Something a path can be evaluated against: a message or a group scope."""

    def _named(self, name: str) -> list[Segment]: ...


def _index(text: str | None, what: str, path: str) -> int:
    """Turn a 1-based index text into a 0-based index (or ALL for '*')."""
    if text is None:
        return 0
    if text == "*":
        return ALL
    number = int(text)
    if number < 1:
        raise PathSyntaxError(f"HL7 path {path!r}: {what} numbers start at 1, got {number}")
    return number - 1


class Path:
    """A compiled HL7 path; `first` and `all` evaluate it against a message or scope."""

    __slots__ = ("comp", "field", "rep", "seg", "seg_index", "sub", "text")

    def __init__(self, text: str) -> None:
        match = _PATH.fullmatch(text.strip())
        if match is None:
            raise PathSyntaxError(
                f"HL7 path {text!r} is not SEG[i]-F[r].C.S "
                "(e.g. PID-3.1, FT1-26[*], IN1[2]-3.1, DG1[*]-3.1)"
            )
        self.text = text
        self.seg: str = match["seg"]
        self.seg_index = _index(match["segidx"], "segment", text)
        self.field = int(match["field"])
        if self.field < 1:
            raise PathSyntaxError(f"HL7 path {text!r}: field numbers start at 1")
        self.rep = _index(match["rep"], "repetition", text)
        self.comp = _index(match["comp"], "component", text)
        self.sub = _index(match["sub"], "subcomponent", text)

    def __repr__(self) -> str:
        return f"Path({self.text!r})"

    @property
    def is_multi(self) -> bool:
        """True when the path can yield more than one value (it contains ``[*]``)."""
        return self.seg_index == ALL or self.rep == ALL

    def _pick(self, seg: Segment, out: list[str] | None) -> str | None:
        """Extract this path's value(s) from one segment: append all to `out`, or return first."""
        fields = seg._fields
        if fields is None:
            fields = seg._split()
        number = self.field
        raw = fields[number] if number < len(fields) else ""
        if not raw:
            return None
        if seg.name == "MSH" and self.field <= 2:
            if out is not None:
                out.append(raw)
            return raw
        enc = seg.encoding
        reps: list[str]
        if enc.repetition and enc.repetition in raw:
            reps = raw.split(enc.repetition)
            if self.rep != ALL:
                reps = [reps[self.rep]] if self.rep < len(reps) else []
        elif self.rep in (0, ALL):
            reps = [raw]
        else:
            return None
        for rep in reps:
            value = rep
            if enc.component and enc.component in value:
                comps = value.split(enc.component)
                value = comps[self.comp] if self.comp < len(comps) else ""
            elif self.comp:
                value = ""
            if enc.subcomponent and enc.subcomponent in value:
                subs = value.split(enc.subcomponent)
                value = subs[self.sub] if self.sub < len(subs) else ""
            elif self.sub:
                value = ""
            if not value or value == '""':
                continue
            if enc.escape and enc.escape in value:
                value = unescape(value, enc, seg.codec)
                if not value:
                    continue
            if out is None:
                return value
            out.append(value)
        return None

    def first(self, source: SegmentSource) -> str | None:
        """The first non-empty value this path addresses, decoded; None when there is none."""
        segs = source._named(self.seg)
        index = self.seg_index
        if index != ALL:
            return self._pick(segs[index], None) if index < len(segs) else None
        for seg in segs:
            value = self._pick(seg, None)
            if value is not None:
                return value
        return None

    def all(self, source: SegmentSource) -> list[str]:
        """Every non-empty value this path addresses (``[*]`` expands), decoded, in order."""
        out: list[str] = []
        segs = source._named(self.seg)
        index = self.seg_index
        if index != ALL:
            if index < len(segs):
                self._pick(segs[index], out)
            return out
        for seg in segs:
            self._pick(seg, out)
        return out


_COMPILED: dict[str, Path] = {}
_CACHE_LIMIT = 4096


def compile_path(path: str) -> Path:
    """Compile an HL7 path once; the result is cached, so calling this per message is cheap."""
    compiled = _COMPILED.get(path)
    if compiled is None:
        if not isinstance(path, str):
            raise PathSyntaxError(f"HL7 path must be a string, got {type(path).__name__}")
        compiled = Path(path)
        if len(_COMPILED) >= _CACHE_LIMIT:
            _COMPILED.clear()
        _COMPILED[path] = compiled
    return compiled
