"""What only the PostgreSQL backend does: URL handling, SQL translation, dead owners."""

from __future__ import annotations

import time

import pytest

from engine.errors import StoreError
from engine.store import open_store
from engine.store.postgres import PostgresStore, split_owner, split_url, to_pyformat
from engine.store.records import InboundRecord
from tests.store.pg import private_schema


class TestTranslation:
    def test_placeholders_become_pyformat_and_percent_is_escaped(self) -> None:
        """`?` outside quotes becomes %s; `%` anywhere becomes %%; quoted `?` stays."""
        assert to_pyformat("SELECT a FROM t WHERE b = ? AND c LIKE '%?x' AND d = ?") \
            == "SELECT a FROM t WHERE b = %s AND c LIKE '%%?x' AND d = %s"

    def test_schema_is_taken_out_of_the_url(self) -> None:
        """The `schema` query parameter is ChargeBridge's; the rest goes to libpq."""
        assert split_url("postgresql://u@h:5432/db?schema=s1&sslmode=disable") \
            == ("postgresql://u@h:5432/db?sslmode=disable", "s1")
        assert split_url("postgresql://u@h/db") == ("postgresql://u@h/db", None)

    def test_an_unsafe_schema_name_is_refused(self) -> None:
        """A schema that is not a plain identifier is a StoreError naming it."""
        with pytest.raises(StoreError, match="schema 'a;b'"):
            PostgresStore("postgresql://u@h/db?schema=a;b")

    def test_owner_names_split_into_node_and_role(self) -> None:
        """A lease owner `node:role` maps to its node row; a bare name has role ''."""
        assert split_owner("node-1:process") == ("node-1", "process")
        assert split_owner("solo") == ("solo", "")


class TestDeadOwners:
    def test_a_dead_owners_lease_is_claimable_before_it_expires(self) -> None:
        """When a lease owner stops heartbeating, its long lease no longer protects the
        message: another node claims it without waiting for the lease time."""
        with private_schema() as url:
            alive = open_store(url)
            dying = PostgresStore(url, owner_stale_seconds=1.0, beat_seconds=0.2)
            other = PostgresStore(url, owner_stale_seconds=1.0, beat_seconds=0.2)
            try:
                [out] = alive.journal([InboundRecord("c", b"MSH|1", "mllp")])
                assert [m.id for m in dying.claim_messages("a:process", 1, 3600)] \
                    == [out.message_id]
                assert other.claim_messages("b:process", 1, 3600) == []
                dying.dispose()  # stops beating, as a SIGKILLed node would
                got = []
                for _ in range(200):
                    got = other.claim_messages("b:process", 1, 3600)
                    if got:
                        break
                    time.sleep(0.05)
                assert [m.id for m in got] == [out.message_id]
            finally:
                for store in (alive, dying, other):
                    if isinstance(store, PostgresStore):
                        store.dispose()

    def test_fsync_off_turns_synchronous_commit_off(self) -> None:
        """store.fsync false trades durability for speed explicitly (synchronous_commit)."""
        with private_schema() as url:
            store = open_store(url, fsync=False)
            try:
                assert store._query("SHOW synchronous_commit") == [("off",)]
            finally:
                assert isinstance(store, PostgresStore)
                store.dispose()
