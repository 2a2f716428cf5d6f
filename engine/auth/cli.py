"""`chargebridge token add|list|revoke`: manage API tokens in the configured store."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.auth.tokens import ROLES, create_token, list_tokens, revoke_token


def _store(args: argparse.Namespace) -> Any:
    from engine.config import load_config
    from engine.store import open_store

    config = load_config(args.config)
    return open_store(config.store.url, fsync=config.store.fsync, base_dir=str(config.base_dir))


def cmd_token_add(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        token = create_token(store, args.name, args.role)
    finally:
        store.close()
    print(token, flush=True)
    # The note goes to stderr so `TOKEN=$(chargebridge token add ...)` captures the token only.
    print(f"# token {args.name!r} ({args.role}) created; it is shown only this once",
          file=sys.stderr, flush=True)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        tokens = list_tokens(store)
    finally:
        store.close()
    for info in tokens:
        state = "revoked" if info.revoked_at is not None else "live"
        print(f"{info.id}\t{info.name}\t{info.role}\t{state}")
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        revoke_token(store, args.name)
    finally:
        store.close()
    print(f"token {args.name!r} revoked")
    return 0


def register(sub: Any) -> None:
    """Add `token add|list|revoke` to the chargebridge CLI's subcommands."""
    token = sub.add_parser("token", help="Manage API tokens (FHIR and API clients).",
                           description="Manage API tokens (FHIR and API clients).")
    actions = token.add_subparsers(dest="token_command", required=True)
    add = actions.add_parser("add", help="Create a token and print it once.")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default="operator")
    add.add_argument("--config", default="config.yaml")
    add.set_defaults(func=cmd_token_add)
    show = actions.add_parser("list", help="List tokens (names and roles, never secrets).")
    show.add_argument("--config", default="config.yaml")
    show.set_defaults(func=cmd_token_list)
    revoke = actions.add_parser("revoke", help="Revoke a token by name.")
    revoke.add_argument("name")
    revoke.add_argument("--config", default="config.yaml")
    revoke.set_defaults(func=cmd_token_revoke)
