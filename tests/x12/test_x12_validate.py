"""Tests for engine.x12.validate: pyx12's verdict through its Python API."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import pytest

from engine.charge import Charge
from engine.x12.claims import group_claims
from engine.x12.settings import X12Settings
from engine.x12.validate import validate_837
from engine.x12.writer import ControlNumbers, render_837p


@pytest.fixture
def valid_text(make_charge: Callable[..., Charge], x12_settings: X12Settings) -> str:
    """A one-claim 837P file the writer produced."""
    claims = group_claims([make_charge(1), make_charge(2)], x12_settings)
    return render_837p(claims, x12_settings, ControlNumbers(5, 6, 1),
                       now=datetime(2024, 3, 5, 9, 0))


class TestValidate837:
    def test_missing_required_loop_is_reported(self, valid_text: str) -> None:
        """Removing the payer loop (2010BB) makes pyx12 reject the file and say why."""
        broken = "".join(line for line in valid_text.splitlines(keepends=True)
                         if not line.startswith("NM1*PR*"))
        result = validate_837(broken)
        assert not result.ok
        assert any("2010BB" in e for e in result.errors)
        assert any("SE count" in e for e in result.errors)

    def test_missing_element_is_reported(self, valid_text: str) -> None:
        """A claim without its frequency code (CLM05-3) is not ok."""
        result = validate_837(valid_text.replace("11:B:1*", "11:B*"))
        assert not result.ok
        assert any("CLM05-03" in e for e in result.errors)

    def test_text_that_is_not_x12_is_not_ok(self) -> None:
        """Arbitrary text gets a failed result, not an exception."""
        result = validate_837("MSH|^~\\&|EHR|CLINIC\r")
        assert not result.ok and result.errors

    def test_non_ascii_is_not_ok(self, valid_text: str) -> None:
        """X12 data is ASCII; anything else fails before pyx12 reads it."""
        result = validate_837(valid_text.replace("OKAFOR", "ÖKAFOR"))
        assert not result.ok and "ASCII" in result.errors[0]

    def test_validator_messages_stay_out_of_application_logs(self, valid_text: str) -> None:
        """pyx12's messages (which may quote PHI) are returned, never passed to root logging."""
        seen: list[logging.LogRecord] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                seen.append(record)

        root = logging.getLogger()
        handler = Keep(level=logging.DEBUG)
        root.addHandler(handler)
        try:
            result = validate_837(valid_text.replace("DMG*D8*19840719*F", "DMG*D8*19840719*Q"))
        finally:
            root.removeHandler(handler)
        assert not result.ok and any("DMG03" in e for e in result.errors)
        assert not [r for r in seen if r.name.startswith("pyx12")]
