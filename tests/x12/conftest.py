"""Shared builders for the 837P tests: a deployment's X12 settings and realistic charges."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from engine.charge import Charge
from engine.x12.settings import X12Settings

# NPIs with valid check digits (Luhn over 80840 + first nine; 1234567893 is CMS's example).
BILLING_NPI = "1234567893"
RENDERING_NPI = "1987654328"
OTHER_RENDERING_NPI = "1567890128"

SETTINGS: dict[str, Any] = {
    "submitter": {
        "name": "Riverside Family Medicine", "id": "RFM0001",
        "contact_name": "Dana Billing", "contact_phone": "(217) 555-0142",
    },
    "receiver": {"name": "Prairie Clearinghouse", "id": "PRCH01"},
    "billing_provider": {
        "npi": BILLING_NPI, "name": "Riverside Family Medicine LLC", "tax_id": "37-1234567",
        "taxonomy": "207Q00000X",
        "address": {
            "line1": "400 N Fifth St", "city": "Springfield", "state": "IL",
            "postal_code": "62702-4310",
        },
    },
    "interchange": {"sender_id": "RFM0001", "receiver_id": "PRCH01"},
    "payers": {"Blue Cross Blue Shield of Illinois": "00621"},
}

CHARGE: dict[str, Any] = {
    "charge_id": "ch_000000000000000000000001",
    "transaction_type": "charge",
    "patient": {
        "mrn": "MRN4471", "last_name": "Okafor", "first_name": "Adaeze", "middle_name": "N",
        "birth_date": "1984-07-19", "sex": "F",
        "address": {
            "line1": "1208 W Washington St", "city": "Springfield", "state": "IL",
            "postal_code": "62702",
        },
    },
    "encounter": {"id": "V100234", "patient_class": "O", "location": "FM-CLINIC"},
    "coverage": [{
        "payer_id": "BCBSIL", "payer_name": "Blue Cross Blue Shield of Illinois",
        "member_id": "XOF884512207", "group_number": "GRP7781", "relationship": "SEL",
    }],
    "service_date": "2024-03-04",
    "procedure": {"code": "99214", "system": "CPT", "modifiers": []},
    "units": "1",
    "amount": "165.00",
    "diagnoses": [{"code": "E11.9", "system": "ICD-10-CM"}, {"code": "I10"}],
    "diagnosis_pointers": [1, 2],
    "rendering_provider": {"npi": RENDERING_NPI, "last_name": "Lindqvist", "first_name": "Maja"},
    "place_of_service": "11",
}


@pytest.fixture
def settings_data() -> dict[str, Any]:
    """The raw settings mapping, a fresh copy to change per test."""
    return copy.deepcopy(SETTINGS)


@pytest.fixture
def x12_settings() -> X12Settings:
    """The settings of a small family practice sending through a clearinghouse."""
    return X12Settings.model_validate(copy.deepcopy(SETTINGS))


@pytest.fixture
def make_charge() -> Callable[..., Charge]:
    """Build a charge from the office-visit template; keyword arguments replace fields."""

    def build(number: int = 1, **changes: Any) -> Charge:
        data = copy.deepcopy(CHARGE)
        data["charge_id"] = f"ch_{number:024d}"
        data.update(changes)
        return Charge.model_validate(data)

    return build


@pytest.fixture
def segments() -> Callable[[str], list[list[str]]]:
    """Split 837 text into segments, each a list of its elements."""

    def split(text: str) -> list[list[str]]:
        return [s.strip().split("*") for s in text.split("~") if s.strip()]

    return split
