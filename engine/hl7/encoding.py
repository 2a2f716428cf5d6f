"""HL7 v2 encoding characters, MSH-18 character sets, and escape sequences (read and write).

Reading decodes \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh..\\ and drops highlight and formatting
commands (\\H\\ \\N\\ \\.sp\\ ...; \\.br\\ becomes a line break). A malformed or unknown
sequence is kept verbatim: real feeds carry stray escape characters (Windows paths) and
losing text is worse than keeping it.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

__all__ = ["DEFAULT_ENCODING", "Encoding", "codec_for_charset", "escape", "unescape"]


@dataclass(frozen=True, slots=True)
class Encoding:
    """The delimiters a message declares in MSH-1 and MSH-2.

    A delimiter the message does not declare (a short MSH-2) is the empty string and is
    never split on.
    """

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def msh2(self) -> str:
        """The encoding characters as written in MSH-2."""
        return self.component + self.repetition + self.escape + self.subcomponent


DEFAULT_ENCODING = Encoding()

# MSH-18 values (HL7 table 0211) to Python codecs; anything else is tried as a codec name.
_CHARSETS: dict[str, str] = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "8859/1": "latin-1",
    "ISO IR100": "latin-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE": "utf-8",
    "UNICODE UTF-8": "utf-8",
    "ISO IR192": "utf-8",
    "UTF-8": "utf-8",
    "UTF8": "utf-8",
}


def codec_for_charset(name: str) -> str | None:
    """Return the Python codec for an MSH-18 character set name, or None when unknown."""
    key = name.strip().upper()
    if not key:
        return "utf-8"
    codec = _CHARSETS.get(key)
    if codec is not None:
        return codec
    try:
        name = codecs.lookup(key).name
        b"".decode(name)  # refuses bytes-to-bytes codecs such as 'hex' or 'zlib'
    except (LookupError, ValueError):
        return None
    return name


def escape(text: str, enc: Encoding = DEFAULT_ENCODING) -> str:
    """Escape `text` for writing into an HL7 field: delimiters and line breaks become escapes."""
    e = enc.escape
    if not e:
        return text.replace("\r", " ").replace("\n", " ")
    out = text.replace(e, f"{e}E{e}")
    for char, code in (
        (enc.field, "F"),
        (enc.component, "S"),
        (enc.subcomponent, "T"),
        (enc.repetition, "R"),
    ):
        if char and char in out:
            out = out.replace(char, f"{e}{code}{e}")
    if "\r" in out or "\n" in out:
        out = out.replace("\r", f"{e}X0D{e}").replace("\n", f"{e}X0A{e}")
    return out


def _sequence(body: str, enc: Encoding, codec: str) -> str | None:
    """Decode one escape-sequence body (without delimiters); None when not a known sequence."""
    if len(body) == 1:
        if body == "F":
            return enc.field
        if body == "S":
            return enc.component
        if body == "T":
            return enc.subcomponent
        if body == "R":
            return enc.repetition
        if body == "E":
            return enc.escape
        if body in ("H", "N"):
            return ""
        return None
    head = body[0]
    if head == "X":
        hexdigits = body[1:]
        if len(hexdigits) % 2:
            return None
        try:
            raw = bytes.fromhex(hexdigits)
        except ValueError:
            return None
        try:
            return raw.decode(codec)
        except (UnicodeDecodeError, LookupError):
            return raw.decode("latin-1")
    if head == ".":
        if body == ".br" or body.startswith(".sp"):
            return "\n"
        if body[1:3] in ("fi", "nf", "in", "ti", "sk", "ce"):
            return ""
        return None
    if head in ("C", "M") and body[1:].isalnum():
        return ""  # character-set switches: the text is already decoded
    return None


def unescape(value: str, enc: Encoding, codec: str = "utf-8") -> str:
    """Decode the escape sequences in one field value (call only when it holds enc.escape)."""
    e = enc.escape
    parts = value.split(e)
    n = len(parts)
    out = [parts[0]]
    i = 1
    while i < n:
        if i + 1 < n:
            body = parts[i]
            decoded = _sequence(body, enc, codec) if body else None
            out.append(f"{e}{body}{e}" if decoded is None else decoded)
            out.append(parts[i + 1])
            i += 2
        else:
            out.append(e + parts[i])
            i += 1
    return "".join(out)
