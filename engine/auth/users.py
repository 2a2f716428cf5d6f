"""Local users: names, argon2id password hashes and roles, kept in the store.

Passwords are never stored or logged; only argon2 hashes (with their own salt and cost
parameters) are. A hash made with older parameters is upgraded at the next good login.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from engine.auth.roles import ROLES, is_role
from engine.errors import ChargeBridgeError

_HASHER = PasswordHasher()
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD_LENGTH = 12
# Verifying against this keeps a login for an unknown name as slow as for a known one.
_DUMMY_HASH = _HASHER.hash("chargebridge-timing-equaliser")


class UserError(ChargeBridgeError):
    """A user cannot be created or changed; the message names the broken rule."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    disabled: bool
    created_at: float


def configure_hashing(*, time_cost: int, memory_cost_kib: int, parallelism: int) -> None:
    """Replace the argon2 cost parameters (tests use small ones; production keeps the
    library's defaults). Existing hashes still verify and are upgraded at login."""
    global _HASHER
    _HASHER = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost_kib,
                             parallelism=parallelism)


def _check(name: str, role: str) -> None:
    if not _NAME.match(name):
        raise UserError(f"user name {name!r} is invalid: use 1-64 letters, digits, '.', '_', "
                        "'@' or '-', starting with a letter or digit")
    if not is_role(role):
        raise UserError(f"role {role!r} is unknown; roles are {', '.join(ROLES)}")


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password is too short: at least {MIN_PASSWORD_LENGTH} characters")


def add_user(store: Any, name: str, password: str, role: str) -> User:
    """Create a user; UserError when the name is taken or a rule is broken."""
    _check(name, role)
    _check_password(password)
    now = time.time()
    with store.transaction() as cur:
        if store._exec(cur, "SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
            raise UserError(f"user {name!r} already exists")
        store._exec(cur, "INSERT INTO users (name, password_hash, role, disabled, created_at, "
                         "updated_at) VALUES (?, ?, ?, 0, ?, ?)",
                    (name, _HASHER.hash(password), role, now, now))
    return User(name, role, False, now)


def get_user(store: Any, name: str) -> User | None:
    rows = store._query("SELECT name, role, disabled, created_at FROM users WHERE name = ?",
                        (name,))
    return User(rows[0][0], rows[0][1], bool(rows[0][2]), rows[0][3]) if rows else None


def list_users(store: Any) -> list[User]:
    rows = store._query("SELECT name, role, disabled, created_at FROM users ORDER BY name")
    return [User(r[0], r[1], bool(r[2]), r[3]) for r in rows]


def count_admins(store: Any) -> int:
    rows = store._query("SELECT COUNT(*) FROM users WHERE role = ? AND disabled = 0", ("admin",))
    return int(rows[0][0])


def update_user(store: Any, name: str, *, role: str | None = None,
                disabled: bool | None = None, password: str | None = None) -> User:
    """Change a user's role, disabled flag or password; the last active admin stays."""
    user = get_user(store, name)
    if user is None:
        raise UserError(f"user {name!r} does not exist")
    new_role = role if role is not None else user.role
    _check(name, new_role)
    new_disabled = user.disabled if disabled is None else disabled
    losing_admin = user.role == "admin" and not user.disabled and (
        new_role != "admin" or new_disabled)
    if losing_admin and count_admins(store) <= 1:
        raise UserError(f"user {name!r} is the last active admin; add another admin first")
    now = time.time()
    with store.transaction() as cur:
        store._exec(cur, "UPDATE users SET role = ?, disabled = ?, updated_at = ? WHERE name = ?",
                    (new_role, int(new_disabled), now, name))
        if password is not None:
            _check_password(password)
            store._exec(cur, "UPDATE users SET password_hash = ? WHERE name = ?",
                        (_HASHER.hash(password), name))
    return User(name, new_role, new_disabled, user.created_at)


def authenticate(store: Any, name: str, password: str) -> User | None:
    """The user when `password` is right and the user is enabled, else None."""
    rows = store._query("SELECT password_hash, role, disabled, created_at FROM users "
                        "WHERE name = ?", (name,))
    stored = rows[0][0] if rows else _DUMMY_HASH
    try:
        _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if not rows or rows[0][2]:
        return None
    if _HASHER.check_needs_rehash(stored):
        with store.transaction() as cur:
            store._exec(cur, "UPDATE users SET password_hash = ? WHERE name = ?",
                        (_HASHER.hash(password), name))
    return User(name, rows[0][1], False, rows[0][3])
