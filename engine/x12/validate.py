"""The independent check of an 837P file: pyx12's x12n_document through its Python API.

Why the API and not the `x12valid` script: its exit status does not carry the verdict
(pyx12 4.0.0 returns 1 on success from the console script and 0 on failure under
`python -m`), and it writes a 999 file next to its input. Here the 999 is built in memory
and the verdict is x12n_document's return value. pyx12 reports each problem through its
`pyx12` logger; those records are collected per call (by thread, so concurrent
destinations do not mix their messages) and never reach the application's logs, because
they may quote data values (names, member ids).
"""

from __future__ import annotations

import io
import logging
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from engine.x12.errors import X12ValidatorUnavailable

__all__ = ["ValidationResult", "validate_837"]

_PYX12_LOGGER = "pyx12"
_IK5 = re.compile(r"IK5\*([A-Z])")
_lock = threading.Lock()
_installed = False


@dataclass(frozen=True)
class ValidationResult:
    """pyx12's verdict: `ok` only when it accepted the file; `errors` in file order."""

    ok: bool
    errors: list[str] = field(default_factory=list)


class _Collect(logging.Handler):
    """Keeps the pyx12 error records emitted by one thread."""

    def __init__(self, thread_id: int) -> None:
        super().__init__(level=logging.ERROR)
        self.thread_id = thread_id
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread_id:
            self.messages.append(record.getMessage())


def _pyx12() -> Any:
    try:
        import pyx12.params
        import pyx12.x12n_document
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise X12ValidatorUnavailable(
            "pyx12 is not installed; the 837P destination validates every file with it "
            "(pip install pyx12)"
        ) from exc
    return pyx12


def _quiet_pyx12_logger() -> logging.Logger:
    global _installed
    logger = logging.getLogger(_PYX12_LOGGER)
    with _lock:
        if not _installed:
            # pyx12 messages quote data values (PHI); they belong in the result only.
            logger.propagate = False
            if logger.getEffectiveLevel() > logging.ERROR or logger.level == logging.NOTSET:
                logger.setLevel(logging.ERROR)
            _installed = True
    return logger


def validate_837(text: str) -> ValidationResult:
    """Validate 837 text with pyx12 against its 005010X222A1 map and code lists.

    Raises X12ValidatorUnavailable when pyx12 is missing. A file pyx12 cannot even read
    (non-ASCII bytes, an unknown GS08 map) is a failed result naming the reason.
    """
    pyx12 = _pyx12()
    try:
        text.encode("ascii")
    except UnicodeEncodeError as exc:
        return ValidationResult(False, [f"not ASCII at offset {exc.start}: X12 data is ASCII"])
    logger = _quiet_pyx12_logger()
    collector = _Collect(threading.get_ident())
    logger.addHandler(collector)
    ack = io.StringIO()
    source = io.StringIO(text)
    try:
        ok = pyx12.x12n_document.x12n_document(
            param=pyx12.params.params(), src_file=source, fd_997=ack, fd_html=None,
        )
    except Exception as exc:  # pyx12 raises EngineError/X12Error/ValueError on unreadable input
        return ValidationResult(False, [*collector.messages, f"{type(exc).__name__}: {exc}"])
    finally:
        logger.removeHandler(collector)
    # pyx12 names its input by repr(); ours is an in-memory buffer.
    errors = [m.replace(str(source), "input") for m in collector.messages]
    rejected = [code for code in _IK5.findall(ack.getvalue()) if code != "A"]
    if ok and rejected:
        ok = False  # belt and braces: a 999 that rejects a set is never a pass
    if not ok and not errors:
        errors.append(f"pyx12 rejected the file (999 IK5={','.join(rejected) or 'none'})")
    return ValidationResult(bool(ok), errors)
