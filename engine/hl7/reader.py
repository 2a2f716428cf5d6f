"""The hot-path HL7 v2 reader: split into segments once, split a segment's fields on first use.

`parse` accepts bytes or text, finds the delimiters in MSH-1/MSH-2, decodes bytes with the
MSH-18 character set (UTF-8 when absent), and accepts \\r, \\n or \\r\\n between segments.
Anything that is not an HL7 v2 message raises HL7ReadError; no other exception escapes.
Values are read with paths (see engine.hl7.path) and come back with escapes decoded.
"""

from __future__ import annotations

from collections.abc import Collection

from engine.errors import HL7ReadError
from engine.hl7.encoding import DEFAULT_ENCODING, Encoding, codec_for_charset, escape, unescape
from engine.hl7.path import _COMPILED, Path, PathSyntaxError, compile_path

__all__ = [
    "DEFAULT_ENCODING",
    "Encoding",
    "HL7ReadError",
    "Message",
    "Path",
    "PathSyntaxError",
    "Scope",
    "Segment",
    "compile_path",
    "escape",
    "parse",
    "unescape",
]


class Segment:
    """One segment; its fields are split from the raw line the first time one is read."""

    __slots__ = ("_fields", "codec", "encoding", "name", "position", "raw")

    def __init__(self, raw: str, name: str, position: int, encoding: Encoding, codec: str) -> None:
        self.raw = raw
        self.name = name
        self.position = position  # 1-based sequence of the segment in the message
        self.encoding = encoding
        self.codec = codec
        self._fields: list[str] | None = None

    def __repr__(self) -> str:
        return f"Segment({self.name!r}, position={self.position})"

    def _split(self) -> list[str]:
        fields = self.raw.split(self.encoding.field)
        if self.name == "MSH":
            # The separator itself is MSH-1, so MSH-n sits at index n like other segments.
            fields.insert(1, self.encoding.field)
        self._fields = fields
        return fields

    @property
    def field_count(self) -> int:
        """The number of fields present (trailing empty fields a sender omitted are not)."""
        fields = self._fields if self._fields is not None else self._split()
        return len(fields) - 1

    def field(self, n: int) -> str:
        """Field n exactly as sent (escapes not decoded); '' when absent."""
        fields = self._fields if self._fields is not None else self._split()
        return fields[n] if 0 < n < len(fields) else ""

    def get(
        self, field: int, component: int = 1, subcomponent: int = 1, repetition: int = 1
    ) -> str | None:
        """One value of this segment, decoded; None when absent or empty. Numbers are 1-based."""
        raw = self.field(field)
        if not raw:
            return None
        if self.name == "MSH" and field <= 2:
            return raw
        enc = self.encoding
        # Split only where the separator occurs: without it the value is its only part.
        sep = enc.repetition
        if sep and sep in raw:
            parts = raw.split(sep)
            value = parts[repetition - 1] if 0 < repetition <= len(parts) else ""
        else:
            value = raw if repetition == 1 else ""
        sep = enc.component
        if sep and sep in value:
            parts = value.split(sep)
            value = parts[component - 1] if 0 < component <= len(parts) else ""
        elif component != 1:
            value = ""
        sep = enc.subcomponent
        if sep and sep in value:
            parts = value.split(sep)
            value = parts[subcomponent - 1] if 0 < subcomponent <= len(parts) else ""
        elif subcomponent != 1:
            value = ""
        if not value or value == '""':
            return None
        if enc.escape and enc.escape in value:
            value = unescape(value, enc, self.codec)
        return value or None

    def repetitions(self, field: int) -> list[str]:
        """The raw repetitions of a field ([] when absent)."""
        raw = self.field(field)
        if not raw:
            return []
        if self.name == "MSH" and field <= 2:
            return [raw]
        rep = self.encoding.repetition
        return raw.split(rep) if rep else [raw]


_NONE: list[Segment] = []


class _Reader:
    """What Message and Scope share: path reads over a set of segments."""

    __slots__ = ()

    def _named(self, name: str) -> list[Segment]:
        raise NotImplementedError

    def segments(self, name: str | None = None) -> list[Segment]:
        """Every segment (in order), or those with the given name."""
        raise NotImplementedError

    def segment(self, name: str) -> Segment | None:
        """The first segment with this name, or None."""
        found = self._named(name)
        return found[0] if found else None

    def get(self, path: str | Path) -> str | None:
        """The first value at `path`, decoded; None when absent or empty."""
        compiled = path if isinstance(path, Path) else _COMPILED.get(path) or compile_path(path)
        return compiled.first(self)

    def get_all(self, path: str | Path) -> list[str]:
        """Every value at `path` (``[*]`` expands), decoded, empties dropped."""
        compiled = path if isinstance(path, Path) else _COMPILED.get(path) or compile_path(path)
        return compiled.all(self)


class Message(_Reader):
    """A parsed HL7 v2 message. Build with `parse`."""

    __slots__ = ("_by_name", "_segments", "codec", "encoding", "raw")

    def __init__(
        self,
        raw: str,
        segments: list[Segment],
        by_name: dict[str, list[Segment]],
        encoding: Encoding,
        codec: str,
    ) -> None:
        self.raw = raw
        self.encoding = encoding
        self.codec = codec  # the Python codec the bytes were decoded with
        self._segments = segments
        self._by_name = by_name

    def __repr__(self) -> str:
        return f"Message(type={self.message_type!r}, control_id={self.control_id!r})"

    def _all(self) -> list[Segment]:
        return self._segments

    def _named(self, name: str) -> list[Segment]:
        return self._by_name.get(name, _NONE)

    def segments(self, name: str | None = None) -> list[Segment]:
        """Every segment (in order), or those with the given name."""
        return list(self._all()) if name is None else list(self._named(name))

    def groups(self, anchor: str, members: Collection[str] | None = None) -> list[Scope]:
        """One scope per `anchor` segment: it and the segments after it up to the next anchor.

        With `members`, a group stops earlier, at the first following segment whose name is
        not in `members` (e.g. ``groups("FT1", {"NTE", "PR1", "ROL"})`` keeps message-level
        DG1 and IN1 out of the last FT1 group).

        A scope falls back to the message for a segment it lacks, but never to a segment that
        belongs to another group: an FT1 without a PR1 does not borrow its neighbour's. The
        segments after the last anchor count as shared when `members` is not given, since
        without it they cannot be told apart from message-level ones (DG1, IN1 in DFT^P03).
        """
        everything = self._segments
        groups: list[list[Segment]] = []
        current: list[Segment] | None = None
        for seg in everything:
            if seg.name == anchor:
                current = [seg]
                groups.append(current)
            elif current is not None:
                if members is not None and seg.name not in members:
                    current = None
                else:
                    current.append(seg)
        if not groups:
            return []
        owned_groups = groups if members is not None else groups[:-1]
        owned = {id(seg) for group in owned_groups for seg in group}
        if members is None:
            owned.add(id(groups[-1][0]))
        shared: dict[str, list[Segment]] = {}
        for seg in everything:
            if id(seg) not in owned:
                shared.setdefault(seg.name, []).append(seg)
        return [Scope(self, group, shared) for group in groups]

    @property
    def msh(self) -> Segment:
        """The MSH segment (always present in a parsed message)."""
        return self._all()[0]

    @property
    def control_id(self) -> str | None:
        """MSH-10, the message control id."""
        return self.msh.get(10)

    @property
    def message_type(self) -> str | None:
        """MSH-9.1^MSH-9.2, e.g. 'DFT^P03' (just 'DFT' when the trigger is absent)."""
        msh = self.msh
        code = msh.get(9, 1)
        if code is None:
            return None
        trigger = msh.get(9, 2)
        return f"{code}^{trigger}" if trigger else code

    @property
    def trigger(self) -> str | None:
        """MSH-9.2, the trigger event (e.g. 'P03')."""
        return self.msh.get(9, 2)

    @property
    def version(self) -> str | None:
        """MSH-12.1, the HL7 version id (e.g. '2.5.1')."""
        return self.msh.get(12)

    @property
    def sending_application(self) -> str | None:
        """MSH-3.1."""
        return self.msh.get(3)

    @property
    def sending_facility(self) -> str | None:
        """MSH-4.1."""
        return self.msh.get(4)

    @property
    def receiving_application(self) -> str | None:
        """MSH-5.1."""
        return self.msh.get(5)

    @property
    def receiving_facility(self) -> str | None:
        """MSH-6.1."""
        return self.msh.get(6)


class Scope(_Reader):
    """A group of segments (one FT1 with its PR1, DG1 ...) read with the message API.

    A path's segment is looked up inside the group first; when the group has no segment of
    that name, the message's segments outside other groups are used, so ``PID-3.1`` works
    inside an FT1 scope. Build with `Message.groups`.
    """

    __slots__ = ("_index", "_own", "_shared", "message")

    def __init__(
        self, message: Message, segments: list[Segment], shared: dict[str, list[Segment]]
    ) -> None:
        self.message = message
        self._own = segments
        self._shared = shared
        self._index: dict[str, list[Segment]] | None = None

    def __repr__(self) -> str:
        return f"Scope({self._own[0].name if self._own else ''}, {len(self._own)} segments)"

    @property
    def anchor(self) -> Segment:
        """The segment that opens the group."""
        return self._own[0]

    def _named(self, name: str) -> list[Segment]:
        index = self._index
        if index is None:
            index = {}
            for seg in self._own:
                index.setdefault(seg.name, []).append(seg)
            self._index = index
        own = index.get(name)
        return own if own is not None else self._shared.get(name, _NONE)

    def segments(self, name: str | None = None) -> list[Segment]:
        """The group's own segments (in order), or those with the given name (with fallback)."""
        return list(self._own) if name is None else list(self._named(name))


def _decode(data: bytes, charset: str | None) -> tuple[str, str]:
    """Decode raw bytes with `charset` or MSH-18; returns (text, codec)."""
    start = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    if charset is None:
        head_end = len(data)
        for sep in (b"\r", b"\n"):
            pos = data.find(sep, start)
            if 0 <= pos < head_end:
                head_end = pos
        head = data[start:head_end].decode("latin-1")
        declared = ""
        if head.startswith("MSH") and len(head) > 3:
            fields = head.split(head[3])
            if len(fields) > 17:
                declared = fields[17]
                for delimiter in head[5:6] + head[4:5]:  # first repetition, first component
                    declared = declared.split(delimiter)[0]
        codec = codec_for_charset(declared)
        if codec is None:
            raise HL7ReadError(f"MSH-18 names an unsupported character set {declared!r}", "MSH-18")
    else:
        codec = codec_for_charset(charset) or ""
        if not codec:
            raise HL7ReadError(f"unsupported character set {charset!r}", "MSH-18")
    try:
        return data[start:].decode(codec), codec
    except UnicodeDecodeError as exc:
        raise HL7ReadError(
            f"bytes at offset {exc.start + start} do not decode as {codec}", "MSH-18"
        ) from None
    except (UnicodeError, LookupError, ValueError) as exc:
        raise HL7ReadError(f"bytes do not decode as {codec}: {exc}", "MSH-18") from None


# Segment names already checked once: real traffic uses a few dozen, so most lines skip the
# character tests.
_KNOWN_NAMES: set[str] = set()


def _is_segment_name(name: str) -> bool:
    return (
        len(name) == 3
        and name.isascii()
        and name.isalnum()
        and name.isupper()
        and name[0].isalpha()
    )


def _declared_encoding(fs: str, chars: str, declared: str) -> Encoding:
    """The delimiters MSH-1 and MSH-2 declare, checked to be distinct delimiters."""
    if len(set(declared + fs)) != len(declared) + 1 or any(
        c.isalnum() or c.isspace() for c in declared
    ):
        raise HL7ReadError(
            f"MSH-2 encoding characters {chars!r} are not distinct delimiters", "MSH-2"
        )
    padded = (declared + "\0\0\0\0")[:4]
    component, repetition, esc, subcomponent = (c if c != "\0" else "" for c in padded)
    return Encoding(fs, component, repetition, esc, subcomponent)


def parse(data: bytes | str, charset: str | None = None) -> Message:
    """Read one HL7 v2 message. `charset` overrides MSH-18. Raises HL7ReadError."""
    if isinstance(data, bytes | bytearray | memoryview):
        text, codec = _decode(bytes(data), charset)
    elif isinstance(data, str):
        text = data
        codec = (codec_for_charset(charset) or "") if charset else "utf-8"
        if not codec:
            raise HL7ReadError(f"unsupported character set {charset!r}", "MSH-18")
    else:
        raise HL7ReadError(f"HL7 input must be bytes or str, got {type(data).__name__}")
    text = text.lstrip("\ufeff \t\r\n")
    if not text.startswith("MSH"):
        raise HL7ReadError("an HL7 v2 message must start with an MSH segment", "MSH")
    if len(text) < 8:
        raise HL7ReadError("the MSH segment is too short to declare its delimiters", "MSH-2")
    fs = text[3]
    if fs.isalnum() or fs in " \r\n":
        raise HL7ReadError(f"MSH-1 field separator {fs!r} is not a delimiter", "MSH-1")
    if "\n" in text:
        text = text.replace("\r\n", "\r").replace("\n", "\r")
    lines = text.split("\r")
    msh = lines[0]
    end = msh.find(fs, 4)
    chars = msh[4:] if end < 0 else msh[4:end]
    if not chars or len(chars) > 5:
        raise HL7ReadError(
            f"MSH-2 encoding characters {chars!r} are not 1 to 5 characters", "MSH-2"
        )
    declared = chars[:4]
    # The standard delimiters need no checking.
    encoding = (
        DEFAULT_ENCODING
        if fs == "|" and declared == "^~\\&"
        else _declared_encoding(fs, chars, declared)
    )
    segments: list[Segment] = []
    by_name: dict[str, list[Segment]] = {}
    known = _KNOWN_NAMES
    new = object.__new__
    position = 0
    for line in lines:
        if not line:
            continue
        name = line[:3]
        if name not in known:
            if line.isspace():
                continue  # blank lines between segments are skipped
            if not _is_segment_name(name):
                raise HL7ReadError(
                    f"segment {position + 1} does not start with a 3-character segment name",
                    f"segment {position + 1}",
                )
            if len(known) < 2048:
                known.add(name)
        position += 1
        if len(line) > 3 and line[3] != fs:
            raise HL7ReadError(
                f"segment {position} ({name}) is not followed by the field separator {fs!r}",
                f"segment {position}",
            )
        # Segment(line, name, position, encoding, codec) without the __init__ call.
        seg = new(Segment)
        seg.raw = line
        seg.name = name
        seg.position = position
        seg.encoding = encoding
        seg.codec = codec
        seg._fields = None
        segments.append(seg)
        same = by_name.get(name)
        if same is None:
            by_name[name] = [seg]
        else:
            same.append(seg)
    return Message(text, segments, by_name, encoding, codec)
