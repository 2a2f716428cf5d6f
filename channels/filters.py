"""Routing filters for fan-out: which charges one destination takes.

Every destination declares `filter:` with the settings model below; `compile()` turns it
into a `ChargeFilter` — a plain callable — that the destination's accepts() calls. The
payer is always the charge's primary coverage (the first one listed).

```yaml
filter:
  payer_ids: ["00430", "04402"]        # primary payer id is one of these, or ...
  payer_names_matching: "(?i)medicare"  # ... the primary payer name matches (re.search)
  exclude_payer_ids: ["99999"]
  exclude_payer_names_matching: "(?i)workers.?comp"
  transaction_types: [charge, credit]
```
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.charge import Charge

__all__ = ["ChargeFilter", "RoutingFilter"]


class RoutingFilter(BaseModel):
    """Which charges a destination accepts. Empty means every charge.

    `payer_ids` and `payer_names_matching` include (a charge passes when either matches);
    the `exclude_*` settings then remove; `transaction_types` restricts last.
    """

    model_config = ConfigDict(extra="forbid")

    payer_ids: list[str] | None = Field(
        None, description="Accept only charges whose primary payer id is one of these.")
    payer_names_matching: str | None = Field(
        None, description="Accept only charges whose primary payer name matches this "
        "regular expression (searched anywhere in the name; use (?i) to ignore case).")
    exclude_payer_ids: list[str] = Field(
        default_factory=list, description="Reject charges whose primary payer id is one of "
        "these.")
    exclude_payer_names_matching: str | None = Field(
        None, description="Reject charges whose primary payer name matches this regular "
        "expression.")
    transaction_types: list[Literal["charge", "credit"]] | None = Field(
        None, description="Accept only these transaction types (charge, credit).")

    @field_validator("payer_names_matching", "exclude_payer_names_matching")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value

    def compile(self) -> ChargeFilter:
        """The filter as a callable, regexes compiled once."""
        return ChargeFilter(self)


class ChargeFilter:
    """`ChargeFilter(settings)(charge)` is True when the destination takes the charge."""

    def __init__(self, settings: RoutingFilter) -> None:
        self._include_ids = (frozenset(settings.payer_ids)
                             if settings.payer_ids is not None else None)
        self._include_names = (re.compile(settings.payer_names_matching)
                               if settings.payer_names_matching is not None else None)
        self._exclude_ids = frozenset(settings.exclude_payer_ids)
        self._exclude_names = (re.compile(settings.exclude_payer_names_matching)
                               if settings.exclude_payer_names_matching is not None else None)
        self._types = (frozenset(settings.transaction_types)
                       if settings.transaction_types is not None else None)

    def __call__(self, charge: Charge) -> bool:
        payer_id, payer_name = _primary_payer(charge)
        if self._include_ids is not None or self._include_names is not None:
            by_id = self._include_ids is not None and payer_id in self._include_ids
            by_name = (self._include_names is not None and payer_name is not None
                       and self._include_names.search(payer_name) is not None)
            if not (by_id or by_name):
                return False
        if payer_id is not None and payer_id in self._exclude_ids:
            return False
        if (self._exclude_names is not None and payer_name is not None
                and self._exclude_names.search(payer_name) is not None):
            return False
        return self._types is None or charge.transaction_type in self._types


def _primary_payer(charge: Charge) -> tuple[str | None, str | None]:
    if not charge.coverage:
        return None, None
    primary = charge.coverage[0]
    return primary.payer_id, primary.payer_name
