"""What the file-writing destinations (837P, JSON lines) share: when a batch is due, and
the rules for a batch file's name."""

from __future__ import annotations

import string
from typing import Any


def batch_due(settings: Any, pending: int, oldest_age_seconds: float, flush: bool) -> bool:
    """A batch is due when asked to flush, when `batch_max` charges wait, or when the
    oldest has waited `batch_seconds`."""
    if pending <= 0:
        return False
    return (flush or pending >= settings.batch_max
            or oldest_age_seconds >= settings.batch_seconds)


def check_file_pattern(value: str, sample: dict[str, Any]) -> str:
    """A batch file name pattern: a name (no folders) using {batch_id} — without it a
    batch re-delivered after a crash cannot find its file — and only the fields in
    `sample` (which are used to try it)."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(value) if name}
    except ValueError as exc:
        raise ValueError(f"file_pattern {value!r}: {exc}") from exc
    if "batch_id" not in names:
        raise ValueError(f"file_pattern {value!r} must use {{batch_id}}: without it a batch "
                         "re-delivered after a crash cannot find its file")
    unknown = names - set(sample)
    if unknown:
        raise ValueError(f"file_pattern {value!r} uses unknown field(s) "
                         f"{', '.join(sorted(unknown))}; known: {', '.join(sorted(sample))}")
    if "/" in value or "\\" in value:
        raise ValueError(f"file_pattern {value!r} is a file name; put folders in `directory`")
    try:
        value.format(**sample)
    except (ValueError, KeyError, IndexError) as exc:
        raise ValueError(f"file_pattern {value!r}: {exc}") from None
    return value
