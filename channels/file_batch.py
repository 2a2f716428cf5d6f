"""Streaming reader for HL7 v2 files: single messages, batch files (FHS/BHS ... BTS/FTS)
and bare runs of MSH messages, read chunk by chunk so a file is never held whole.

Segments may end with \\r, \\n or \\r\\n; MLLP block characters and blank lines are
ignored. A message starts at each MSH line and ends at the next MSH or batch segment.
`BatchReader.read()` returns the items completed by the next chunk of the file; it keeps
in memory only the message being assembled (bounded by `max_message_bytes`).
Batch trailers are checked as they pass: BTS-1 against the messages of its batch, FTS-1
against the batches of the file, and a batch without its BTS at the end of the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import BinaryIO

from engine.errors import ChargeBridgeError

__all__ = ["BatchReader", "FileItem", "FileUnreadable"]

# \n, MLLP start block and end block all become segment ends; lengths (offsets) are kept.
_TO_CR = bytes.maketrans(b"\n\x0b\x1c", b"\r\r\r")
_BATCH = {b"FHS": "file_header", b"BHS": "batch_header", b"BTS": "batch_trailer",
          b"FTS": "file_trailer"}


class FileUnreadable(ChargeBridgeError):
    """A file cannot be read as HL7 v2 messages (no MSH, a message over the size limit)."""


@dataclass
class FileItem:
    """One message (segments joined by \\r, ending \\r) and where it sits in the file."""

    data: bytes
    index: int  # 1-based message number in the file
    offset: int  # byte offset of its MSH line
    batch: int  # 1-based batch number (0 outside any BHS)


@dataclass
class _Counts:
    batches: int = 0
    in_batch: int | None = None  # messages since the open BHS; None when no batch is open
    mismatches: list[str] = field(default_factory=list)


class BatchReader:
    """Reads items from an open binary file, `chunk_size` bytes at a time."""

    def __init__(self, fh: BinaryIO, *, max_message_bytes: int = 10 << 20,
                 chunk_size: int = 1 << 16) -> None:
        self.fh = fh
        self.max_message_bytes = max_message_bytes
        self.chunk_size = chunk_size
        self.eof = False
        self.messages = 0
        self.stray_lines = 0  # non-empty lines outside any message (before the first MSH)
        self._carry = b""  # an incomplete last line
        self._pos = 0  # file offset of _carry's first byte
        self._current: list[bytes] = []
        self._current_size = 0
        self._current_offset = 0
        self._counts = _Counts()

    @property
    def trailer_problems(self) -> list[str]:
        """Trailer count mismatches seen so far (complete once `eof` is True)."""
        return list(self._counts.mismatches)

    def read(self) -> list[FileItem]:
        """The items completed by the next chunk; at the end of the file, the rest."""
        if self.eof:
            return []
        chunk = self.fh.read(self.chunk_size)
        out: list[FileItem] = []
        if not chunk:
            self.eof = True
            if self._carry:
                self._line(self._carry, self._pos, out)
                self._carry = b""
            self._flush(out)
            if self._counts.in_batch is not None:
                self._counts.mismatches.append(
                    f"batch {self._counts.batches} has no BTS trailer")
            return out
        if self._pos == 0 and not self._carry and chunk.startswith(b"\xef\xbb\xbf"):
            chunk = chunk[3:]
            self._pos = 3
        data = self._carry + chunk.translate(_TO_CR)
        lines = data.split(b"\r")
        self._carry = lines.pop()
        if len(self._carry) > self.max_message_bytes:
            raise FileUnreadable(f"a line at byte {self._pos + len(data) - len(self._carry)} "
                                 f"is longer than {self.max_message_bytes} bytes")
        pos = self._pos
        for line in lines:
            if line:
                self._line(line, pos, out)
            pos += len(line) + 1
        self._pos = pos
        return out

    def _line(self, line: bytes, offset: int, out: list[FileItem]) -> None:
        if line.isspace():
            return
        head = line[:3]
        kind = _BATCH.get(head)
        if kind is not None:
            self._flush(out)
            self._batch_segment(kind, line)
        elif head == b"MSH":
            self._flush(out)
            self._current = [line]
            self._current_size = len(line) + 1
            self._current_offset = offset
        elif self._current:
            self._current.append(line)
            self._current_size += len(line) + 1
            if self._current_size > self.max_message_bytes:
                raise FileUnreadable(f"message {self.messages + 1} at byte "
                                     f"{self._current_offset} is larger than "
                                     f"{self.max_message_bytes} bytes")
        else:
            self.stray_lines += 1

    def _flush(self, out: list[FileItem]) -> None:
        if not self._current:
            return
        self.messages += 1
        counts = self._counts
        if counts.in_batch is not None:
            counts.in_batch += 1
        out.append(FileItem(b"\r".join(self._current) + b"\r", self.messages,
                            self._current_offset,
                            counts.batches if counts.in_batch is not None else 0))
        self._current = []
        self._current_size = 0

    def _batch_segment(self, kind: str, line: bytes) -> None:
        counts = self._counts
        if kind == "batch_header":
            if counts.in_batch is not None:
                counts.mismatches.append(f"batch {counts.batches} has no BTS trailer")
            counts.batches += 1
            counts.in_batch = 0
        elif kind == "batch_trailer":
            declared = _first_field(line)
            seen = counts.in_batch or 0
            if declared is not None and declared != seen:
                counts.mismatches.append(f"BTS-1 of batch {counts.batches} says {declared} "
                                         f"messages, the batch has {seen}")
            counts.in_batch = None
        elif kind == "file_trailer":
            declared = _first_field(line)
            if declared is not None and declared != counts.batches:
                counts.mismatches.append(f"FTS-1 says {declared} batches, the file has "
                                         f"{counts.batches}")


def _first_field(line: bytes) -> int | None:
    """BTS-1 / FTS-1 as a number; None when empty or not a number (nothing to check)."""
    if len(line) < 5:
        return None
    value = line[4:].split(line[3:4])[0].strip()
    return int(value) if value.isdigit() else None
