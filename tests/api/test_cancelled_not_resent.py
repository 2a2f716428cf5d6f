"""A delivery a credit cancelled before it was sent is not a dead letter: neither a
resend nor "retry all dead letters" may bill the reversed charge."""

from __future__ import annotations

from pathlib import Path

from engine.api.service import dead_letters, failed_delivery_ids, resend_delivery
from engine.charge import Charge
from engine.pipeline.corrections import cancel_marker
from engine.store import open_store
from engine.store.records import (
    FAILED,
    PROCESSED,
    QUEUED,
    ChargeRecord,
    DeliveryUpdate,
    InboundRecord,
    MessageOutcome,
)


class TestCancelledDeliveries:
    def test_cancelled_original_is_neither_resent_nor_retried(self, tmp_path: Path) -> None:
        """The cancelled delivery is refused by resend and left out of the dead letters,
        while a genuinely failed one stays retryable."""
        store = open_store(f"sqlite:///{tmp_path / 'store.db'}", fsync=False)
        [journaled] = store.journal([InboundRecord("c", b"MSH|x", "mllp")])
        charges = [Charge(charge_id=cid, source={"channel": "c"}) for cid in ("orig", "other")]
        store.complete_message(MessageOutcome(journaled.message_id, PROCESSED, charges=[
            ChargeRecord(c, QUEUED, destinations=["claims"]) for c in charges]))
        rows = {r.charge_id: r.id for r in store.claim_deliveries("claims", "n", 10, 60)}
        store.finish_deliveries([
            DeliveryUpdate(rows["orig"], FAILED, cancel_marker("credit-1")),
            DeliveryUpdate(rows["other"], FAILED, "400 Bad Request")])
        assert failed_delivery_ids(store) == [rows["other"]]
        assert [i["delivery_id"] for i in dead_letters(store)["items"]] == [rows["other"]]
        assert resend_delivery(store, rows["orig"], "op").startswith("not resendable")
        assert resend_delivery(store, rows["other"], "op") == "queued for resend"
