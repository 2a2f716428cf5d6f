"""Fixtures: every store test runs on both backends (SQLite file, PostgreSQL schema)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.store.base import SqlStore
from engine.store.postgres import PostgresStore
from engine.store.sqlite import SqliteStore
from tests.store.pg import private_schema

StoreFactory = Callable[..., SqlStore]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def location(backend: str, tmp_path: Path) -> Iterator[str]:
    """A fresh database: an SQLite file path, or a URL naming a private PG schema."""
    if backend == "sqlite":
        yield str(tmp_path / "store.db")
        return
    with private_schema() as url:
        yield url


@pytest.fixture
def make_store(backend: str, location: str) -> Iterator[StoreFactory]:
    """Opens store instances on ONE database (each like another process or node);
    `migrate=False` gives an untouched one."""
    opened: list[SqlStore] = []

    def factory(*, migrate: bool = True) -> SqlStore:
        store: SqlStore = (SqliteStore(location) if backend == "sqlite"
                           else PostgresStore(location, beat_seconds=0.5))
        opened.append(store)
        if migrate:
            store.migrate()
        return store

    yield factory
    for store in opened:
        if isinstance(store, PostgresStore):
            store.dispose()
        else:
            store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> SqlStore:
    return make_store()
