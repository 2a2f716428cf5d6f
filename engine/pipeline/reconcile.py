"""Charge reconciliation: per message, lines in against charges out (routed, held,
dropped by a named rule); a message whose counts do not add up is a capture gap."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from engine.store.base import SqlStore
from engine.store.records import ERROR, PROCESSED


def unbalanced(message: Any) -> str | None:
    """Why a message's counts don't add up, or None when they do."""
    if message.status == ERROR:
        return f"ERROR: {message.reason}"
    if message.status != PROCESSED or not message.counts:
        return None
    counts = message.counts
    lines_in = counts.get("lines_in", 0)
    out = counts.get("charges", 0) + counts.get("dropped", 0)
    if lines_in != out:
        return f"{lines_in} line(s) in, {out} out ({counts.get('charges', 0)} charge(s), " \
               f"{counts.get('dropped', 0)} dropped)"
    return None


def reconcile_report(store: SqlStore, since: str) -> tuple[str, int]:
    start = datetime.fromisoformat(since).replace(tzinfo=UTC).timestamp()
    lines, before = [], None
    while True:
        page = store.search_messages(since=start, before_id=before, limit=500)
        if not page:
            break
        for message in page:
            problem = unbalanced(message)
            if problem:
                lines.append(f"message {message.id} ({message.channel}, control id "
                             f"{message.control_id}): {problem}")
        before = page[-1].id
    if not lines:
        return f"every message since {since} balances", 0
    return "\n".join([*lines, f"{len(lines)} message(s) do not balance"]), 1
