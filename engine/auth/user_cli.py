"""`chargebridge user add|list|set`: manage local users from the command line.

The first admin is created here (the dashboard has no anonymous sign-up). Passwords come
from a prompt (asked twice) or, when stdin is not a terminal, from its first line — never
from the command line, where other users could read them in the process list.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from engine.auth.roles import ROLES


def _store(args: argparse.Namespace) -> Any:
    from engine.config import load_config
    from engine.store import open_store

    config = load_config(args.config)
    return open_store(config.store.url, fsync=config.store.fsync, base_dir=str(config.base_dir))


def _read_password(prompt: str = "Password: ") -> str:
    if sys.stdin.isatty():
        first = getpass.getpass(prompt)
        if getpass.getpass("Repeat password: ") != first:
            from engine.auth.users import UserError

            raise UserError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def cmd_user_add(args: argparse.Namespace) -> int:
    from engine import audit
    from engine.auth.users import add_user

    store = _store(args)
    user = add_user(store, args.name, _read_password(), args.role)
    audit.record(store, "cli", "user.add", f"user:{user.name}", "ok", f"role {user.role}")
    print(f"user {user.name} added with role {user.role}")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    from engine.auth.users import list_users

    for user in list_users(_store(args)):
        print(f"{user.name}\t{user.role}\t{'disabled' if user.disabled else 'active'}")
    return 0


def cmd_user_set(args: argparse.Namespace) -> int:
    from engine import audit
    from engine.auth.sessions import end_user_sessions
    from engine.auth.users import update_user

    store = _store(args)
    password = _read_password("New password: ") if args.password else None
    disabled = True if args.disable else (False if args.enable else None)
    user = update_user(store, args.name, role=args.role, disabled=disabled, password=password)
    end_user_sessions(store, user.name)
    audit.record(store, "cli", "user.update", f"user:{user.name}", "ok")
    print(f"user {user.name}: role {user.role}, {'disabled' if user.disabled else 'active'}")
    return 0


def register(sub: Any) -> None:
    """Add the `user` command to the CLI's subparsers (engine.cli build_parser extras)."""
    parser = sub.add_parser("user", help="Manage dashboard / API users.",
                            description="Manage dashboard / API users.")
    users = parser.add_subparsers(dest="user_command", required=True)

    p = users.add_parser("add", help="Add a user; the password is read from a prompt or stdin.")
    p.add_argument("name")
    p.add_argument("--role", choices=sorted(ROLES), required=True)
    p.add_argument("--config", default="config.yaml")
    p.set_defaults(func=cmd_user_add)

    p = users.add_parser("list", help="List users and their roles.")
    p.add_argument("--config", default="config.yaml")
    p.set_defaults(func=cmd_user_list)

    p = users.add_parser("set", help="Change a user's role, enable/disable it, or its password.")
    p.add_argument("name")
    p.add_argument("--role", choices=sorted(ROLES))
    group = p.add_mutually_exclusive_group()
    group.add_argument("--disable", action="store_true")
    group.add_argument("--enable", action="store_true")
    p.add_argument("--password", action="store_true", help="Read a new password.")
    p.add_argument("--config", default="config.yaml")
    p.set_defaults(func=cmd_user_set)
