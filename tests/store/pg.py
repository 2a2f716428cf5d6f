"""Test support: a private, uniquely named PostgreSQL schema per test.

The server is $CHARGEBRIDGE_TEST_PG_URL (default this machine's database `test`). When it
cannot be reached the test is skipped with the reason, except under CI=true, where a
missing PostgreSQL fails the test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

PG_URL = os.environ.get("CHARGEBRIDGE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def require_postgres() -> None:
    """Skip (or under CI fail) when the test PostgreSQL cannot be reached."""
    try:
        with psycopg.connect(PG_URL, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = f"PostgreSQL at {PG_URL} is not reachable: {type(exc).__name__}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: a missing PostgreSQL is a failure)")
        pytest.skip(reason)


@contextmanager
def private_schema(prefix: str = "cbtest") -> Iterator[str]:
    """A store URL on a fresh schema, dropped (with everything in it) afterwards."""
    require_postgres()
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}schema={schema}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
