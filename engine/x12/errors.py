"""Errors raised while turning charges into 837P claims and checking the result."""

from __future__ import annotations

from engine.errors import ChargeBridgeError

__all__ = ["ClaimDataError", "X12Error", "X12ValidatorUnavailable"]


class X12Error(ChargeBridgeError):
    """Root of the 837P errors."""


class ClaimDataError(X12Error):
    """A charge lacks data an 837P claim needs, or holds data the standard forbids.

    `charge_id` names the charge, `field` its JSON path (e.g. `procedure.code`), and
    `rule` the broken rule; such a charge cannot be billed until it is corrected.
    """

    def __init__(self, charge_id: str, field: str, rule: str) -> None:
        self.charge_id = charge_id
        self.field = field
        self.rule = rule
        super().__init__(f"charge {charge_id}: {field}: {rule}")


class X12ValidatorUnavailable(X12Error):
    """pyx12, the independent 837P validator, is not installed."""
