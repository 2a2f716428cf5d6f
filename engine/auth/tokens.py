"""API tokens: random bearer tokens for machine clients (an EHR posting FHIR, a script).

Only the sha256 of a token is stored — a 32-byte random token cannot be guessed from its
hash, so a slow password hash buys nothing here. A token is shown once, when made.
Roles are ordered: viewer < operator < admin.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from engine.auth.roles import ROLES as _ROLE_PERMISSIONS
from engine.errors import ChargeBridgeError
from engine.store.base import SqlStore

__all__ = ["ROLES", "TokenError", "TokenInfo", "create_token", "list_tokens", "revoke_token",
           "role_allows", "verify_token"]

# Least to most powerful, as engine.auth.roles declares them.
ROLES: tuple[str, ...] = tuple(_ROLE_PERMISSIONS)
_PREFIX = "cbt_"


class TokenError(ChargeBridgeError):
    """A token cannot be made or changed (unknown role, name taken, not found)."""


@dataclass(frozen=True)
class TokenInfo:
    """Who a verified token belongs to."""

    id: int
    name: str
    role: str
    created_at: float
    revoked_at: float | None = None


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def role_allows(role: str, needed: str) -> bool:
    """Whether `role` is at least `needed` in viewer < operator < admin."""
    if role not in ROLES or needed not in ROLES:
        return False
    return ROLES.index(role) >= ROLES.index(needed)


def create_token(store: SqlStore, name: str, role: str) -> str:
    """Make a token for `name` with `role`; returns the token (the only time it is seen)."""
    if role not in ROLES:
        raise TokenError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if not name.strip():
        raise TokenError("a token needs a non-empty name")
    if store._query("SELECT 1 FROM api_tokens WHERE name = ?", (name,)):
        raise TokenError(f"a token named {name!r} already exists (revoke it first)")
    token = _PREFIX + secrets.token_urlsafe(32)
    with store.transaction() as cur:
        store._exec(cur, "INSERT INTO api_tokens (name, role, token_hash, created_at) "
                         "VALUES (?, ?, ?, ?)", (name, role, _hash(token), time.time()))
    return token


def verify_token(store: SqlStore, token: str) -> TokenInfo | None:
    """The live token matching `token`, or None (unknown or revoked)."""
    if not token.startswith(_PREFIX):
        return None
    digest = _hash(token)
    rows = store._query("SELECT id, name, role, created_at, token_hash FROM api_tokens "
                        "WHERE token_hash = ? AND revoked_at IS NULL", (digest,))
    if not rows or not hmac.compare_digest(rows[0][4], digest):
        return None
    r = rows[0]
    return TokenInfo(int(r[0]), r[1], r[2], float(r[3]))


def revoke_token(store: SqlStore, name: str) -> None:
    """Revoke the live token called `name` (its name may then be reused)."""
    with store.transaction() as cur:
        # The name stays unique: a revoked token is renamed out of the way.
        updated = store._exec(cur, "UPDATE api_tokens SET revoked_at = ?, name = name || ? || "
                                   "CAST(id AS TEXT) WHERE name = ? AND revoked_at IS NULL",
                              (time.time(), "#revoked-", name)).rowcount
    if not updated:
        raise TokenError(f"no live token named {name!r}")


def list_tokens(store: SqlStore) -> list[TokenInfo]:
    """Every token, live and revoked, oldest first (never the token itself)."""
    rows = store._query("SELECT id, name, role, created_at, revoked_at FROM api_tokens "
                        "ORDER BY id")
    return [TokenInfo(int(r[0]), r[1], r[2], float(r[3]),
                      None if r[4] is None else float(r[4])) for r in rows]
