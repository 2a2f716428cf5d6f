"""Message search, detail (with PHI masking and audit), reprocess and edit-and-reprocess."""

from __future__ import annotations

import json
from typing import Any

from engine import audit
from engine.api.testing import (
    fail_delivery,
    login_client,
    put_charges,
    sample_charge,
    sample_message,
    send,
)
from engine.store.records import QUEUED, ChargeRecord

PHI = ("Rivera", "Elena", "19780412", "1978-04-12", "Juniper", "XOH884512037", "MRN100234",
       "W201447789")


def _send_some(node: Any, count: int, prefix: str = "T") -> None:
    acks = send(node, [sample_message(f"{prefix}{i:04d}") for i in range(count)])
    assert all(b"MSA|AA|" in a or b"MSA|CA|" in a for a in acks)


class TestSearch:
    def test_keyset_pages_cover_every_message_once(self, node: Any, base_url: str) -> None:
        """Walking next_cursor visits every message once, newest first."""
        _send_some(node, 7)
        viewer = login_client(base_url, "viewer")
        seen: list[int] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 3, "channel": "clinic"}
            if cursor:
                params["cursor"] = cursor
            page = viewer.get("/api/messages", params=params).json()
            seen += [m["id"] for m in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == 7 and seen == sorted(seen, reverse=True)

    def test_filters_narrow_the_result(self, node: Any, base_url: str) -> None:
        """Control id, type, status and time range each filter the search."""
        _send_some(node, 3, "F")
        viewer = login_client(base_url, "viewer")
        one = viewer.get("/api/messages", params={"control_id": "F0001"}).json()["items"]
        assert [m["control_id"] for m in one] == ["F0001"]
        typed = viewer.get("/api/messages", params={"message_type": "DFT^P03"}).json()
        assert len(typed["items"]) == 3
        assert viewer.get("/api/messages", params={"status": "ERROR"}).json()["items"] == []
        future = viewer.get("/api/messages", params={"since": "2999-01-01T00:00:00"}).json()
        assert future["items"] == []
        bad = viewer.get("/api/messages", params={"since": "yesterday"})
        assert bad.status_code == 422

    def test_mrn_search_is_audited_without_the_mrn(self, node: Any, base_url: str) -> None:
        """An operator may search by MRN; the audit entry carries a hash, not the MRN."""
        _send_some(node, 1, "M")
        mid = node.store.search_messages(limit=1)[0].id
        put_charges(node.store, mid, [])
        operator = login_client(base_url, "operator")
        found = operator.get("/api/messages", params={"mrn": "MRN100234"}).json()["items"]
        assert [m["id"] for m in found] == [mid]
        entry = audit.read(node.store, action="phi.search")[0]
        assert entry.actor == "operator" and "MRN100234" not in (entry.detail or "")


class TestDetail:
    def _message_with_charges(self, node: Any) -> int:
        _send_some(node, 1, "D")
        mid = node.store.search_messages(limit=1)[0].id
        put_charges(node.store, mid, [ChargeRecord(sample_charge("ch_d1", "clinic"), QUEUED,
                                                   destinations=["pm"])])
        fail_delivery(node.store, "ch_d1")
        return mid

    def test_operator_sees_everything_and_the_view_is_audited(self, node: Any,
                                                               base_url: str) -> None:
        """Detail has named HL7 fields, charges, deliveries with attempts and events; an
        unmasked view is written to the audit log."""
        mid = self._message_with_charges(node)
        operator = login_client(base_url, "operator")
        detail = operator.get(f"/api/messages/{mid}").json()
        pid = next(s for s in detail["segments"] if s["name"] == "PID")
        name = next(f for f in pid["fields"] if f["position"] == 5)
        assert name["name"] == "Patient Name" and name["value"].startswith("Rivera")
        msh = detail["segments"][0]
        assert {"position": 10, "name": "Message Control ID", "value": "D0000"} in msh["fields"]
        charge = detail["charges"][0]
        assert charge["data"]["patient"]["last_name"] == "Rivera"
        delivery = charge["deliveries"][0]
        assert delivery["status"] == "FAILED"
        assert [e["status"] for e in delivery["attempts_log"]] == ["FAILED"]
        assert [e["status"] for e in detail["events"]] == ["RECEIVED", "PROCESSED"]
        views = audit.read(node.store, action="phi.view")
        assert [(v.actor, v.target) for v in views] == [("operator", f"message:{mid}")]

    def test_viewer_sees_no_phi_anywhere(self, node: Any, base_url: str) -> None:
        """For a viewer names, birth dates, member ids, addresses and MRNs are masked in
        the raw message, the segments and the charges; nothing is audited as a PHI view."""
        mid = self._message_with_charges(node)
        viewer = login_client(base_url, "viewer")
        text = json.dumps(viewer.get(f"/api/messages/{mid}").json(), ensure_ascii=False)
        for value in PHI:
            assert value not in text, value
        assert "99213" in text and "DFT^P03" in text  # billing facts stay visible
        assert audit.read(node.store, action="phi.view") == []


class TestActions:
    def test_reprocess_one_and_by_filter(self, node: Any, base_url: str) -> None:
        """Reprocess answers per message; a filter selects every message it matches."""
        _send_some(node, 3, "R")
        ids = [m.id for m in node.store.search_messages(limit=10)]
        for mid in ids:
            put_charges(node.store, mid, [])
        operator = login_client(base_url, "operator")
        one = operator.post(f"/api/messages/{ids[0]}/reprocess").json()
        assert one["succeeded"] == 1 and one["results"][0]["outcome"] == "queued for reprocessing"
        assert node.store.get_message(ids[0]).status == "RECEIVED"
        many = operator.post("/api/messages/reprocess",
                             json={"filter": {"status": "PROCESSED"}}).json()
        assert sorted(int(r["id"]) for r in many["results"]) == sorted(ids[1:])
        missing = operator.post("/api/messages/reprocess", json={"message_ids": [999999]}).json()
        assert missing["failed"] == 1 and missing["results"][0]["outcome"] == "not found"

    def test_edit_keeps_the_original_beside_the_edit(self, node: Any, base_url: str) -> None:
        """An edit is stored as a new message linked to the original, which is unchanged."""
        _send_some(node, 1, "E")
        original = node.store.search_messages(limit=1)[0]
        operator = login_client(base_url, "operator")
        edited = original.raw.decode().replace("99213", "99214").replace("\r", "\n")
        reply = operator.post(f"/api/messages/{original.id}/edit", json={"raw": edited}).json()
        new = node.store.get_message(reply["new_message_id"])
        assert new.meta["edited_from"] == original.id and new.status == "RECEIVED"
        assert b"99214" in new.raw and b"\n" not in new.raw
        assert node.store.get_message(original.id).raw == original.raw
        assert operator.post("/api/messages/999999/edit",
                             json={"raw": "MSH|^~\\&|X"}).status_code == 404
