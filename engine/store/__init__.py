"""The message store: one interface (SqlStore), an embedded SQLite backend and a
PostgreSQL backend for production and several nodes."""

from __future__ import annotations

from engine.store.base import SqlStore, Store

__all__ = ["SqlStore", "Store", "open_store"]


def open_store(url: str, *, fsync: bool = True, base_dir: str | None = None) -> SqlStore:
    """Open (and migrate) the store a config's `store.url` names."""
    from pathlib import Path

    if url.startswith("sqlite:///"):
        from engine.store.sqlite import SqliteStore

        path = Path(url[len("sqlite:///"):])
        if base_dir is not None and not path.is_absolute():
            path = Path(base_dir) / path
        store: SqlStore = SqliteStore(path, fsync=fsync)
    elif url.startswith(("postgresql://", "postgres://")):
        from engine.store.postgres import PostgresStore

        store = PostgresStore(url, fsync=fsync)
    else:
        raise ValueError(f"store.url must start with sqlite:/// or postgresql://, got {url!r}")
    store.migrate()
    return store
