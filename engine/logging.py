"""structlog setup and the log vocabulary: JSON lines carrying ids and states, never PHI.

Log events are dotted nouns (`message.journaled`, `delivery.failed`); keys come from a
fixed vocabulary (channel, message_id, control_id, status, ...). A last processor drops
any key that is not in the vocabulary, so a careless call cannot leak a name or a birth
date into the logs.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

ALLOWED_KEYS = frozenset({
    "event", "level", "timestamp", "dropped_keys", "logger", "channel", "message_id", "control_id",
    "message_type", "status", "reason", "rule", "charge_id", "delivery_id", "destination",
    "batch_id", "attempts", "count", "error", "peer", "transport", "port", "host", "path",
    "file", "line", "role", "node", "seconds", "retry_in_seconds", "http_status", "kind",
    "mapping", "version", "user", "action", "size", "limit", "pid", "signal", "detail",
    "duplicate", "segment", "field", "code", "claims", "url", "method", "status_code",
    "cooldown_seconds", "mapping_hash", "resource", "version_id", "partition",
})


class DropUnknownKeys:
    """Removes keys outside the vocabulary (PHI guard); keeps a count of what it dropped."""

    def __call__(self, logger: Any, name: str,
                 event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        dropped = [k for k in event_dict if k not in ALLOWED_KEYS]
        for key in dropped:
            del event_dict[key]
        if dropped:
            event_dict["dropped_keys"] = len(dropped)
        return event_dict


_debug = False


def debug_enabled() -> bool:
    """Whether debug lines are written: hot paths skip building ones that would be dropped."""
    return _debug


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Configure structlog once for the process: JSON lines on stderr."""
    global _debug
    _debug = getattr(logging, level.upper(), logging.INFO) <= logging.DEBUG
    renderer: Any = (structlog.processors.JSONRenderer() if fmt == "json"
                     else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            DropUnknownKeys(),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
