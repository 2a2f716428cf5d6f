"""The audit log: who did what, to which item, when, from where — append-only.

Every login (success and failure), every view of PHI, every operator action and every
user or channel change is recorded here. This module offers `record` and `read` only:
there is deliberately no code path that updates or deletes an audit row. Details carry
ids and outcomes, never PHI (an MRN searched for is recorded as a hash prefix).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger("chargebridge.audit")


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: float
    actor: str
    action: str
    target: str | None
    outcome: str
    detail: str | None
    ip: str


def record(store: Any, actor: str, action: str, target: str | None = None,
           outcome: str = "ok", detail: str | None = None, ip: str = "") -> None:
    """Append one audit entry in its own transaction."""
    with store.transaction() as cur:
        store._exec(cur, "INSERT INTO audit (at, actor, action, target, outcome, detail, ip) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (time.time(), actor, action, target, outcome, detail, ip))
    # The actor stays out of the log: a failed login's "user name" is whatever was typed.
    log.info("audit.recorded", action=action, status=outcome)


def read(store: Any, *, actor: str | None = None, action: str | None = None,
         target: str | None = None, since: float | None = None,
         before_id: int | None = None, limit: int = 100) -> list[AuditEntry]:
    """Newest first, keyset-paginated by `before_id`."""
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("actor", actor), ("action", action), ("target", target)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if since is not None:
        where.append("at >= ?")
        params.append(since)
    if before_id is not None:
        where.append("id < ?")
        params.append(before_id)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = store._query(f"SELECT id, at, actor, action, target, outcome, detail, ip FROM audit "
                        f"{clause} ORDER BY id DESC LIMIT ?", (*params, limit))
    return [AuditEntry(*r) for r in rows]


def fingerprint(value: str) -> str:
    """A short one-way tag for a PHI value (e.g. an MRN searched for) kept in audit details."""
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:12]
