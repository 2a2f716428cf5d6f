"""HL7 v2: the hot-path reader and path syntax, ACK building, and MLLP transport."""

from engine.hl7.encoding import Encoding, escape, unescape
from engine.hl7.path import Path, PathSyntaxError, compile_path
from engine.hl7.reader import Message, Scope, Segment, parse

__all__ = [
    "Encoding",
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
