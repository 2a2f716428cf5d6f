"""Held-charge and dead-letter worklists, release, resend and retrying dead letters."""

from __future__ import annotations

from typing import Any

from engine import audit
from engine.api.testing import (
    fail_delivery,
    held,
    login_client,
    put_charges,
    sample_charge,
    sample_message,
    send,
)
from engine.store.records import QUEUED, ChargeRecord


def _message(node: Any, control_id: str) -> int:
    send(node, [sample_message(control_id)])
    return next(m.id for m in node.store.search_messages(control_id=control_id))


class TestHeld:
    def test_sorted_by_amount_and_age(self, node: Any, base_url: str) -> None:
        """The held worklist sorts numerically by amount and by age either way."""
        for i, amount in enumerate(("9.50", "145.00", "55.00")):
            mid = _message(node, f"H{i}")
            put_charges(node.store, mid, [held(sample_charge(f"ch_h{i}", "clinic", amount))])
        viewer = login_client(base_url, "viewer")

        def ids(**params: str) -> list[str]:
            page = viewer.get("/api/worklists/held", params=params).json()
            assert page["total"] == 3
            return [c["charge_id"] for c in page["items"]]

        assert ids(sort="amount", order="desc") == ["ch_h1", "ch_h2", "ch_h0"]
        assert ids(sort="amount", order="asc") == ["ch_h0", "ch_h2", "ch_h1"]
        assert ids(sort="age", order="desc") == ["ch_h0", "ch_h1", "ch_h2"]
        assert ids(sort="age", order="asc") == ["ch_h2", "ch_h1", "ch_h0"]
        assert viewer.get("/api/worklists/held", params={"sort": "name"}).status_code == 422

    def test_release_answers_per_charge_and_is_audited(self, node: Any, base_url: str) -> None:
        """Releasing queues a held charge; an unknown or already released one says so."""
        mid = _message(node, "REL")
        put_charges(node.store, mid, [held(sample_charge("ch_rel", "clinic"))])
        operator = login_client(base_url, "operator")
        reply = operator.post("/api/charges/release",
                              json={"charge_ids": ["ch_rel", "ch_nope"]}).json()
        outcomes = {r["id"]: r["outcome"] for r in reply["results"]}
        assert outcomes == {"ch_rel": "released", "ch_nope": "not found"}
        assert node.store.get_charge("ch_rel")[1] == QUEUED
        again = operator.post("/api/charges/ch_rel/release").json()
        assert again["results"][0]["outcome"].startswith("not held")
        assert [e.target for e in audit.read(node.store, action="charge.release")][-1] == \
            "charge:ch_rel"


class TestDeadLetters:
    def _dead(self, node: Any, control_id: str, charge_id: str, amount: str = "10.00") -> int:
        mid = _message(node, control_id)
        put_charges(node.store, mid, [ChargeRecord(sample_charge(charge_id, "clinic", amount),
                                                   QUEUED, destinations=["pm"])])
        return fail_delivery(node.store, charge_id)

    def test_resend_requeues_one_destination(self, node: Any, base_url: str) -> None:
        """Resend puts a FAILED delivery back in the queue with a fresh batch."""
        delivery_id = self._dead(node, "DL1", "ch_dl1")
        viewer = login_client(base_url, "viewer")
        page = viewer.get("/api/worklists/dead-letter").json()
        assert [d["delivery_id"] for d in page["items"]] == [delivery_id]
        operator = login_client(base_url, "operator")
        reply = operator.post(f"/api/deliveries/{delivery_id}/resend").json()
        assert reply["results"][0]["outcome"] == "queued for resend"
        row = node.store._query("SELECT status, attempts, batch_id FROM deliveries WHERE id = ?",
                                (delivery_id,))[0]
        assert row == ("QUEUED", 0, None)
        assert node.store.get_charge("ch_dl1")[1] == QUEUED
        queued = operator.post("/api/deliveries/resend", json={"delivery_ids": [delivery_id]})
        assert queued.json()["results"][0]["outcome"] == "not resendable (status QUEUED)"

    def test_retry_all_dead_letters(self, node: Any, base_url: str) -> None:
        """Retrying the dead-letter queue requeues every FAILED delivery."""
        ids = [self._dead(node, f"DA{i}", f"ch_da{i}") for i in range(3)]
        operator = login_client(base_url, "operator")
        reply = operator.post("/api/deliveries/retry-dead-letters", json={}).json()
        assert sorted(int(r["id"]) for r in reply["results"]) == sorted(ids)
        assert reply["succeeded"] == 3
        assert login_client(base_url, "viewer").get(
            "/api/worklists/dead-letter").json()["total"] == 0
