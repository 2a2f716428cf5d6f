"""The x12_837p destination over a real store: files, the pyx12 gate, re-delivery,
file names and corrections written as frequency-8 claims."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from channels.x12_837p import X12DestinationSettings
from engine.connectors import QueuedDelivery
from engine.x12.validate import validate_837
from tests.engine_process import BILLING
from tests.x12_destination.conftest import Rig, clm05, make_charge, make_credit


def _queued(rig: Rig, charges: list, kind: str = "original",
            previous: dict | None = None) -> list[QueuedDelivery]:
    return [QueuedDelivery(i + 1, c.charge_id, c, kind=kind, previous=previous or {})
            for i, c in enumerate(charges)]


class TestBatchFile:
    def test_bad_charge_fails_with_its_reason_and_the_rest_is_written(self, rig: Rig) -> None:
        """A charge that fails the claim checks goes FAILED naming the field, while the
        other charges of the batch are written to a file pyx12 accepts."""
        good = [make_charge(1), make_charge(2, procedure={"code": "93000"}, amount="55.00")]
        bad = make_charge(3, diagnoses=[])
        outcomes = {o.delivery_id: o for o in rig.destination.deliver_batch(
            _queued(rig, [*good, bad]), 7)}
        assert outcomes[3].status == "FAILED" and "diagnoses" in outcomes[3].detail
        assert outcomes[1].status == outcomes[2].status == "SENT"
        [path] = rig.files()
        assert path.name == "claims_00000007.837"
        text = path.read_text()
        assert validate_837(text).ok
        assert bad.charge_id not in text and good[0].charge_id in text
        manifest = json.loads(path.with_name(path.name + ".manifest.json").read_text())
        assert manifest["claims"][0]["charge_ids"] == [c.charge_id for c in good]
        assert outcomes[1].result["claim_id"] == manifest["claims"][0]["claim_id"]

    def test_file_pyx12_rejects_is_not_released(self, rig: Rig) -> None:
        """Two lines that each pass the checks but whose claim total is too long for CLM02
        make pyx12 reject the file: nothing is written and both go FAILED with its message."""
        charges = [make_charge(1, amount="9999999999999999.99"),
                   make_charge(2, amount="9999999999999999.99", procedure={"code": "93000"})]
        outcomes = rig.destination.deliver_batch(_queued(rig, charges), 8)
        assert [o.status for o in outcomes] == ["FAILED", "FAILED"]
        assert all("pyx12 rejected the file" in o.detail and "CLM02" in o.detail
                   for o in outcomes)
        assert not (rig.tmp / "out" / "837p").exists() or not any(
            (rig.tmp / "out" / "837p").iterdir())

    def test_redelivered_batch_is_not_written_twice(self, rig: Rig) -> None:
        """A batch delivered again under the same batch id (after a crash) answers SENT
        with the same claim ids from its manifest and leaves the file untouched."""
        queued = _queued(rig, [make_charge(1), make_charge(2, procedure={"code": "36415"})])
        first = rig.destination.deliver_batch(queued, 3)
        [path] = rig.files()
        before = path.read_bytes()
        again = rig.destination.deliver_batch(queued, 3)
        assert [o.status for o in again] == ["SENT", "SENT"]
        assert [o.result["claim_id"] for o in again] == [o.result["claim_id"] for o in first]
        assert rig.files() == [path] and path.read_bytes() == before

    def test_control_numbers_never_repeat(self, rig: Rig) -> None:
        """Each file takes the next ISA13 and GS06 from the store's durable counters."""
        rig.destination.deliver_batch(_queued(rig, [make_charge(1)]), 1)
        rig.destination.deliver_batch(_queued(rig, [make_charge(2)]), 2)
        isa = [re.search(r"ISA(?:\*[^*]*){12}\*(\d{9})", p.read_text()).group(1)
               for p in rig.files()]
        assert isa == ["000000001", "000000002"]


class TestFileNames:
    def test_pattern_fills_date_and_usage(self, tmp_path: Path) -> None:
        """{date} and {usage} are filled in, ISA15 carries the usage indicator, and a
        re-delivery finds the file whatever day it was written."""
        rig = Rig(tmp_path, usage_indicator="P", file_pattern="rfm_{usage}_{date}_{batch_id}.x12")
        rig.destination.deliver_batch(_queued(rig, [make_charge(1)]), 42)
        [path] = sorted((tmp_path / "out" / "837p").glob("*.x12"))
        assert re.fullmatch(r"rfm_P_\d{8}_42\.x12", path.name)
        assert path.read_text().split("~")[0].split("*")[15] == "P"
        renamed = path.with_name("rfm_P_19990101_42.x12")
        path.rename(renamed)
        assert rig.destination.existing_file(42) == renamed

    @pytest.mark.parametrize("pattern", ["claims_{date}.837", "out/{batch_id}.837",
                                         "{batch_id}_{payer}.837"])
    def test_unusable_patterns_are_refused(self, pattern: str) -> None:
        """A pattern without {batch_id}, with a folder, or with an unknown field is a
        config error, not a lost batch."""
        with pytest.raises(ValidationError, match="file_pattern"):
            X12DestinationSettings.model_validate({**BILLING, "file_pattern": pattern})


class TestCorrectionClaims:
    def test_void_refers_to_the_original_claim(self, rig: Rig) -> None:
        """A void delivery becomes a frequency-8 claim with REF*F8 = the original claim id,
        and pyx12 accepts it."""
        credit = make_credit(9, "93000", "55.00")
        [outcome] = rig.destination.deliver_batch(
            _queued(rig, [credit], "void", {"claim_id": "CB0123456789ABCDEF01"}), 5)
        assert outcome.status == "SENT", outcome.detail
        assert outcome.result["frequency"] == "8"
        text = rig.files()[0].read_text()
        assert clm05(text) == ["11:B:8"]
        assert "REF*F8*CB0123456789ABCDEF01~" in text
        assert "SV1*HC:93000*55.00*UN*1" in text
        assert validate_837(text).ok

    def test_payer_claim_number_wins(self, rig: Rig) -> None:
        """When the original's result records the payer's claim number, REF*F8 carries it."""
        credit = make_credit(9, "93000", "55.00")
        rig.destination.deliver_batch(_queued(rig, [credit], "void", {
            "claim_id": "CB0123456789ABCDEF01", "payer_claim_number": "2024075000123"}), 5)
        assert "REF*F8*2024075000123~" in rig.files()[0].read_text()

    def test_correction_without_an_original_claim_fails(self, rig: Rig) -> None:
        """A credit whose original claim is unknown goes FAILED: a void needs a reference."""
        [outcome] = rig.destination.deliver_batch(
            _queued(rig, [make_credit(9, "93000", "55.00")]), 5)
        assert outcome.status == "FAILED" and "REF*F8" in outcome.detail
        assert rig.files() == []
