"""Server-side login sessions and login throttling.

The browser holds a random session id in an HttpOnly cookie; the store holds only its
SHA-256, the user, a per-session CSRF token (checked on every state-changing request)
and the expiry. Sessions end after `IDLE_SECONDS` without use or `MAX_AGE_SECONDS` in all.
Failed logins are counted per user + client address: after `MAX_FAILURES` within
`FAILURE_WINDOW_SECONDS` that pair is locked out for `LOCKOUT_SECONDS`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

COOKIE = "cb_session"
IDLE_SECONDS = 3600.0
MAX_AGE_SECONDS = 12 * 3600.0
# A read does not rewrite last_seen more often than this (fewer writes per poll).
_TOUCH_EVERY_SECONDS = 60.0

MAX_FAILURES = 5
FAILURE_WINDOW_SECONDS = 900.0
LOCKOUT_SECONDS = 900.0


@dataclass(frozen=True)
class Session:
    user: str
    role: str
    csrf_token: str
    expires_at: float


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def create_session(store: Any, user: str, ip: str = "") -> tuple[str, Session]:
    """Start a session; returns the id for the cookie (never stored) and the session."""
    session_id = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    now = time.time()
    expires = now + MAX_AGE_SECONDS
    with store.transaction() as cur:
        store._exec(cur, "DELETE FROM sessions WHERE expires_at < ? OR last_seen_at < ?",
                    (now, now - IDLE_SECONDS))
        store._exec(cur, "INSERT INTO sessions (id_hash, user_name, csrf_token, ip, created_at, "
                         "last_seen_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (_digest(session_id), user, csrf, ip, now, now, expires))
    role_rows = store._query("SELECT role FROM users WHERE name = ?", (user,))
    return session_id, Session(user, role_rows[0][0] if role_rows else "", csrf, expires)


def lookup_session(store: Any, session_id: str) -> Session | None:
    """The live session for a cookie value, or None (unknown, expired, idle, user gone)."""
    if not session_id or len(session_id) > 128:
        return None
    now = time.time()
    rows = store._query(
        "SELECT s.user_name, u.role, s.csrf_token, s.expires_at, s.last_seen_at FROM sessions s "
        "JOIN users u ON u.name = s.user_name WHERE s.id_hash = ? AND u.disabled = 0",
        (_digest(session_id),))
    if not rows:
        return None
    user, role, csrf, expires, last_seen = rows[0]
    if expires < now or last_seen < now - IDLE_SECONDS:
        end_session(store, session_id)
        return None
    if now - last_seen > _TOUCH_EVERY_SECONDS:
        with store.transaction() as cur:
            store._exec(cur, "UPDATE sessions SET last_seen_at = ? WHERE id_hash = ?",
                        (now, _digest(session_id)))
    return Session(user, role, csrf, expires)


def end_session(store: Any, session_id: str) -> None:
    with store.transaction() as cur:
        store._exec(cur, "DELETE FROM sessions WHERE id_hash = ?", (_digest(session_id),))


def end_user_sessions(store: Any, user: str) -> None:
    """Log a user out everywhere (disabled, role or password changed)."""
    with store.transaction() as cur:
        store._exec(cur, "DELETE FROM sessions WHERE user_name = ?", (user,))


def csrf_matches(expected: str, presented: str | None) -> bool:
    """Constant-time comparison of the session's CSRF token with the one presented."""
    return bool(presented) and hmac.compare_digest(expected, presented or "")


def _key(user: str, ip: str) -> str:
    return f"{user.lower()}|{ip}"


def locked_until(store: Any, user: str, ip: str) -> float | None:
    """When the lockout of this user + address ends, or None when not locked."""
    rows = store._query("SELECT locked_until FROM login_failures WHERE key = ?",
                        (_key(user, ip),))
    if rows and rows[0][0] is not None and rows[0][0] > time.time():
        return float(rows[0][0])
    return None


def record_failure(store: Any, user: str, ip: str) -> bool:
    """Count a failed login; True when this failure starts a lockout."""
    now = time.time()
    key = _key(user, ip)
    with store.transaction() as cur:
        row = store._exec(cur, "SELECT failures, first_failed_at FROM login_failures "
                               "WHERE key = ?", (key,)).fetchone()
        if row is None or row[1] < now - FAILURE_WINDOW_SECONDS:
            failures, first = 1, now
        else:
            failures, first = row[0] + 1, row[1]
        locked = now + LOCKOUT_SECONDS if failures >= MAX_FAILURES else None
        store._exec(cur, "INSERT INTO login_failures (key, failures, first_failed_at, "
                         "locked_until) VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                         "failures = excluded.failures, first_failed_at = "
                         "excluded.first_failed_at, locked_until = excluded.locked_until",
                    (key, 0 if locked else failures, now if locked else first, locked))
    return locked is not None


def clear_failures(store: Any, user: str, ip: str) -> None:
    with store.transaction() as cur:
        store._exec(cur, "DELETE FROM login_failures WHERE key = ?", (_key(user, ip),))
