"""Shared builders for the 837P destination tests: a real SQLite store, the real
x12_837p destination writing into tmp_path, and realistic charges."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from channels.x12_837p import X12Destination, X12DestinationSettings
from engine.charge import Charge
from engine.pipeline.corrections import apply_corrections
from engine.pipeline.delivery import DeliveryRunner, StoreContext
from engine.store.records import QUEUED, ChargeRecord, InboundRecord, MessageOutcome
from engine.store.sqlite import SqliteStore
from tests.engine_process import BILLING

DESTINATION = "claims_837p"

CHARGE: dict[str, Any] = {
    "transaction_type": "charge",
    "patient": {"mrn": "MRN100234", "last_name": "Rivera", "first_name": "Elena",
                "birth_date": "1978-04-12", "sex": "F",
                "address": {"line1": "418 Juniper Hollow Rd", "city": "Springfield",
                            "state": "IL", "postal_code": "62704"}},
    "encounter": {"id": "V20240315001", "patient_class": "O"},
    "coverage": [{"payer_id": "00621", "payer_name": "Blue Cross Blue Shield of Illinois",
                  "member_id": "XOH884512037", "relationship": "18"}],
    "service_date": "2024-03-15",
    "procedure": {"code": "99213", "system": "CPT"},
    "units": "1", "amount": "145.00",
    "diagnoses": [{"code": "E11.9"}, {"code": "I10"}],
    "rendering_provider": {"npi": "1234567893", "last_name": "Okafor"},
    "place_of_service": "11",
    "source": {"channel": "ehr_dft"},
}


def make_charge(n: int, **changes: Any) -> Charge:
    """A charge of the office-visit encounter; `n` makes its id; keywords replace fields."""
    data = copy.deepcopy(CHARGE)
    data["charge_id"] = f"ch_{n:024d}"
    data.update(changes)
    return Charge.model_validate(data)


def make_credit(n: int, code: str, amount: str, **changes: Any) -> Charge:
    """A credit (as the DFT mapping makes it: negative amount) reversing one line."""
    return make_charge(n, transaction_type="credit", amount=f"-{amount}",
                       procedure={"code": code, "system": "CPT"}, **changes)


class Rig:
    """A store, one 837P destination and its delivery runner, all real."""

    def __init__(self, tmp: Path, **settings: Any) -> None:
        self.tmp = tmp
        self.store = SqliteStore(tmp / "store.db")
        self.store.migrate()
        config = X12DestinationSettings.model_validate(
            {**copy.deepcopy(BILLING), "batch_seconds": 0, **settings})
        self.destination = X12Destination(DESTINATION, config,
                                          StoreContext(self.store, tmp / "out"))
        self.runner = DeliveryRunner(self.store, [self.destination], owner="test")

    def process(self, charges: list[Charge], *, wait_seconds: float = 10.0
                ) -> list[ChargeRecord]:
        """Store charges as one processed message, credits corrected as the processor
        does it; returns the records as stored."""
        [journaled] = self.store.journal([InboundRecord(channel="ehr_dft", raw=b"MSH|t",
                                                        transport="test")])
        records = [ChargeRecord(c, QUEUED, destinations=[DESTINATION]) for c in charges]
        apply_corrections(self.store, [self.destination], records, wait_seconds=wait_seconds)
        self.store.complete_message(MessageOutcome(journaled.message_id, "PROCESSED",
                                                   charges=records, mrn="MRN100234"))
        return records

    def files(self) -> list[Path]:
        return sorted((self.tmp / "out" / "837p").glob("*.837"))

    def status(self, charge_id: str) -> str:
        found = self.store.get_charge(charge_id)
        assert found is not None
        return found[1]

    def deliveries(self, charge_id: str) -> list[dict[str, Any]]:
        return self.store.deliveries_for_charge(charge_id)


def clm05(text: str) -> list[str]:
    """CLM05 (place:B:frequency) of every claim in an 837 file."""
    return [m.split("*")[5] for m in re.findall(r"CLM\*[^~]*", text)]


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    """A store, destination and runner under tmp_path."""
    return Rig(tmp_path)
