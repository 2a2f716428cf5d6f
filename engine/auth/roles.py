"""Roles and what each may do: viewer (PHI masked), operator (PHI and actions), admin
(users and channels too). Every permission check in the API and dashboard asks here."""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    READ = "read"          # channels, counts, messages with PHI masked
    PHI = "phi"            # see PHI unmasked, search by MRN
    ACT = "act"            # reprocess, edit-and-reprocess, release, resend, retry
    CHANNELS = "channels"  # start / stop / pause channels
    USERS = "users"        # manage users, read the audit log


ROLES: dict[str, frozenset[Permission]] = {
    "viewer": frozenset({Permission.READ}),
    "operator": frozenset({Permission.READ, Permission.PHI, Permission.ACT}),
    "admin": frozenset(Permission),
}


def is_role(name: str) -> bool:
    return name in ROLES


def allows(role: str, permission: Permission) -> bool:
    """Whether `role` grants `permission`; an unknown role grants nothing."""
    return permission in ROLES.get(role, frozenset())
