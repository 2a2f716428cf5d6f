"""The API's own SQL (users, sessions, throttling, audit, worklists, resend, metrics,
overview) runs unchanged on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from engine import audit, metrics
from engine.api import service
from engine.api.testing import fail_delivery, held, put_charges, sample_charge
from engine.auth import sessions, users
from engine.store import open_store
from engine.store.records import QUEUED, ChargeRecord, InboundRecord

PG_URL = os.environ.get("CHARGEBRIDGE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _postgres_url() -> Iterator[str]:
    try:
        with psycopg.connect(PG_URL, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = f"PostgreSQL at {PG_URL} is not reachable: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    schema = f"cbapi_{uuid.uuid4().hex[:12]}"
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}schema={schema}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: Any, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        opened = open_store(f"sqlite:///{tmp_path / 'store.db'}", fsync=False)
        yield opened
        opened.close()
        return
    for url in _postgres_url():
        opened = open_store(url)
        yield opened
        opened.close()


def _message(store: Any, control_id: str) -> int:
    rec = InboundRecord(channel="clinic", raw=b"MSH|^~\\&|A|B|C|D|||DFT^P03|" +
                        control_id.encode() + b"|P|2.5.1", transport="mllp",
                        control_id=control_id, message_type="DFT^P03")
    return store.journal([rec])[0].message_id


class _Config:
    channels: list[Any] = []
    destinations: list[Any] = []

    def channel(self, name: str) -> Any:
        raise KeyError(name)


class TestBackends:
    def test_users_sessions_and_throttling(self, store: Any) -> None:
        """Users authenticate, sessions open and close, failures lock a user+address."""
        users.configure_hashing(time_cost=1, memory_cost_kib=1024, parallelism=1)
        users.add_user(store, "ann", "twelve chars ok", "operator")
        assert users.authenticate(store, "ann", "twelve chars ok") is not None
        assert users.authenticate(store, "ann", "wrong") is None
        sid, _ = sessions.create_session(store, "ann", "10.0.0.1")
        assert sessions.lookup_session(store, sid).role == "operator"
        sessions.end_session(store, sid)
        assert sessions.lookup_session(store, sid) is None
        locked = [sessions.record_failure(store, "ann", "10.0.0.9")
                  for _ in range(sessions.MAX_FAILURES)]
        assert locked[-1] and not any(locked[:-1])
        assert sessions.locked_until(store, "ann", "10.0.0.9") is not None
        assert sessions.locked_until(store, "ann", "10.0.0.1") is None

    def test_audit_worklists_resend_and_metrics(self, store: Any) -> None:
        """Audit reads back newest first; worklists sort; resend requeues; metrics and
        the overview render from the store."""
        audit.record(store, "ann", "login")
        audit.record(store, "ann", "phi.view", "message:1")
        assert [e.action for e in audit.read(store, actor="ann")] == ["phi.view", "login"]
        for i, amount in enumerate(("9.50", "145.00")):
            put_charges(store, _message(store, f"W{i}"),
                        [held(sample_charge(f"ch_w{i}", "clinic", amount))])
        by_amount = service.held_charges(store, sort="amount", order="desc")
        assert [c["charge_id"] for c in by_amount["items"]] == ["ch_w1", "ch_w0"]
        put_charges(store, _message(store, "D1"), [ChargeRecord(
            sample_charge("ch_d", "clinic"), QUEUED, destinations=["pm"])])
        delivery_id = fail_delivery(store, "ch_d")
        assert service.dead_letters(store, sort="amount")["total"] == 1
        assert service.resend_delivery(store, delivery_id, "ann") == "queued for resend"
        assert service.failed_delivery_ids(store) == []
        text = metrics.render(store, _Config())
        assert 'chargebridge_messages_received_total{channel="clinic"} 3' in text
        assert 'chargebridge_queue_depth{destination="pm"} 1' in text
        rates = service.per_minute(store, time.time())
        assert sum(rates["clinic"]) == 3
        assert service.store_size(store)["bytes"] > 0
