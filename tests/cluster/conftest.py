"""Cluster tests reuse the store fixtures: each runs on SQLite and PostgreSQL."""

from tests.store.conftest import backend, location, make_store, store

__all__ = ["backend", "location", "make_store", "store"]
