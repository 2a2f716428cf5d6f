"""ASC X12 837P 005010X222A1: claim grouping, the file writer and the pyx12 check.

Typical use by a destination::

    claims = group_claims(charges, settings, corrections)
    text = render_837p(claims, settings, ControlNumbers(isa, gs, st))
    result = validate_837(text)   # release the file only when result.ok
"""

from engine.x12.claims import Claim, ClaimLine, Correction, charge_problems, group_claims
from engine.x12.errors import ClaimDataError, X12Error, X12ValidatorUnavailable
from engine.x12.settings import X12Settings
from engine.x12.validate import ValidationResult, validate_837
from engine.x12.writer import ControlNumbers, render_837p, transaction_count

__all__ = [
    "Claim",
    "ClaimDataError",
    "ClaimLine",
    "ControlNumbers",
    "Correction",
    "ValidationResult",
    "X12Error",
    "X12Settings",
    "X12ValidatorUnavailable",
    "charge_problems",
    "group_claims",
    "render_837p",
    "transaction_count",
    "validate_837",
]
