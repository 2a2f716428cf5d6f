"""Credits against charges already billed, over a real store and the real 837P
destination: void claims, cancellation before sending, and the cases held for a person."""

from __future__ import annotations

import json

from engine.x12.validate import validate_837
from tests.engine_process import wait_for
from tests.x12_destination.conftest import DESTINATION, Rig, clm05, make_charge, make_credit


def _deliver_all(rig: Rig) -> None:
    wait_for(lambda: rig.runner.run_once() == 0 and rig.store.pending_deliveries(
        DESTINATION)[0] == 0, what="the queue to drain")


class TestVoidAfterSent:
    def test_credit_for_a_sent_claim_becomes_a_valid_void(self, rig: Rig) -> None:
        """A credit matching a charge already SENT (same MRN, encounter, code, date) is
        delivered as a kind-void frequency-8 claim with REF*F8 = the original claim id."""
        original = make_charge(1, procedure={"code": "93000"}, amount="55.00")
        rig.process([original])
        _deliver_all(rig)
        sent = json.loads(rig.deliveries(original.charge_id)[0]["result"])
        credit = make_credit(2, "93000", "55.00")
        [record] = rig.process([credit])
        assert record.charge.source["corrects"] == original.charge_id
        _deliver_all(rig)
        [void] = rig.deliveries(credit.charge_id)
        assert (void["kind"], void["status"]) == ("void", "SENT")
        assert rig.status(credit.charge_id) == "SENT"
        text = rig.files()[-1].read_text()
        assert clm05(text) == ["11:B:8"]
        assert f"REF*F8*{sent['claim_id']}~" in text
        assert validate_837(text).ok

    def test_credit_for_part_of_a_claim_is_held(self, rig: Rig) -> None:
        """A credit reversing one of two lines of a sent claim is HELD with the reason,
        since a void would also cancel the line still owed; nothing is written."""
        rig.process([make_charge(1), make_charge(2, procedure={"code": "93000"},
                                                 amount="55.00")])
        _deliver_all(rig)
        files = rig.files()
        credit = make_credit(3, "93000", "55.00")
        [record] = rig.process([credit])
        assert record.status == "HELD"
        assert any(f.rule == "credit_partial_claim" and "1 of 2 lines" in f.message
                   for f in record.findings)
        _deliver_all(rig)
        assert rig.files() == files and rig.deliveries(credit.charge_id) == []

    def test_credits_for_every_line_void_the_claim_once(self, rig: Rig) -> None:
        """Credits for all lines of a claim in one message make one void claim."""
        rig.process([make_charge(1), make_charge(2, procedure={"code": "93000"},
                                                 amount="55.00")])
        _deliver_all(rig)
        rig.process([make_credit(3, "99213", "145.00"), make_credit(4, "93000", "55.00")])
        _deliver_all(rig)
        text = rig.files()[-1].read_text()
        assert clm05(text) == ["11:B:8"] and text.count("LX*") == 2
        assert validate_837(text).ok


class TestCreditBeforeSent:
    def test_unsent_original_is_cancelled_and_nothing_billed(self, rig: Rig) -> None:
        """A credit for a charge still QUEUED cancels its delivery (FAILED, cancelled by
        credit) and is itself sent nowhere: no file bills either."""
        original = make_charge(1, procedure={"code": "93000"}, amount="55.00")
        rig.process([original])
        credit = make_credit(2, "93000", "55.00")
        [record] = rig.process([credit])
        assert record.status == "READY"
        [cancelled] = rig.deliveries(original.charge_id)
        assert cancelled["status"] == "FAILED" and "cancelled by credit" in cancelled["detail"]
        assert rig.status(original.charge_id) == "FAILED"
        _deliver_all(rig)
        assert rig.files() == []

    def test_charge_and_credit_in_one_message_cancel_out(self, rig: Rig) -> None:
        """A charge and its credit in the same message are neither billed."""
        records = rig.process([make_charge(1, procedure={"code": "93000"}, amount="55.00"),
                               make_credit(2, "93000", "55.00")])
        assert [r.status for r in records] == ["READY", "READY"]
        _deliver_all(rig)
        assert rig.files() == []

    def test_credit_with_no_charge_is_held(self, rig: Rig) -> None:
        """A credit that matches no known charge is HELD for a person."""
        [record] = rig.process([make_credit(2, "93000", "55.00")])
        assert record.status == "HELD"
        assert any(f.rule == "credit_without_charge" for f in record.findings)

    def test_original_in_a_batch_being_written_holds_the_credit(self, rig: Rig) -> None:
        """While the original sits in a batch (assigned, not finished) the credit waits,
        then is HELD rather than cancelling a charge that may already be in a file."""
        original = make_charge(1, procedure={"code": "93000"}, amount="55.00")
        rig.process([original])
        rows = rig.store.claim_deliveries(DESTINATION, "other-node", 10, 300.0)
        rig.store.assign_batch([r.id for r in rows])
        [record] = rig.process([make_credit(2, "93000", "55.00")], wait_seconds=0.3)
        assert record.status == "HELD"
        assert any(f.rule == "credit_behind_delivery" for f in record.findings)
        assert rig.deliveries(original.charge_id)[0]["status"] == "QUEUED"

    def test_explicit_corrects_names_the_original(self, rig: Rig) -> None:
        """A mapping that sets source.corrects picks the original even when fields differ."""
        original = make_charge(1, procedure={"code": "93000"}, amount="55.00")
        rig.process([original])
        _deliver_all(rig)
        credit = make_credit(2, "93000", "55.00", encounter={"id": "OTHER"},
                             source={"channel": "ehr_dft", "corrects": original.charge_id})
        rig.process([credit])
        _deliver_all(rig)
        assert rig.deliveries(credit.charge_id)[0]["kind"] == "void"
        assert clm05(rig.files()[-1].read_text()) == ["11:B:8"]
