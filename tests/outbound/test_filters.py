"""Routing filters: which charges a destination accepts."""

from __future__ import annotations

import pydantic
import pytest

from channels.filters import RoutingFilter
from tests.outbound.conftest import BCBS, MEDICARE, make_charge

MEDICARE_ADVANTAGE = {"payer_id": "87726", "payer_name": "UnitedHealthcare Medicare Advantage"}


def _accepts(settings: dict[str, object], **charge: object) -> bool:
    return RoutingFilter.model_validate(settings).compile()(make_charge(1, **charge))  # type: ignore[arg-type]


class TestRoutingFilter:
    def test_empty_filter_accepts_everything(self) -> None:
        """No filter settings: every charge, with or without coverage, passes."""
        predicate = RoutingFilter().compile()
        charge = make_charge(1)
        assert predicate(charge)
        assert predicate(charge.model_copy(update={"coverage": []}))

    def test_payer_ids_or_name_include(self) -> None:
        """A charge passes when its primary payer id is listed or its name matches."""
        settings = {"payer_ids": ["00430"], "payer_names_matching": "(?i)medicare"}
        assert _accepts(settings, payer=MEDICARE)
        assert _accepts(settings, payer=MEDICARE_ADVANTAGE)
        assert not _accepts(settings, payer=BCBS)

    def test_excludes_win_over_includes(self) -> None:
        """exclude_payer_ids and exclude_payer_names_matching remove matching charges."""
        assert not _accepts({"payer_names_matching": "(?i)medicare",
                             "exclude_payer_ids": ["87726"]}, payer=MEDICARE_ADVANTAGE)
        assert not _accepts({"exclude_payer_names_matching": "(?i)medicare"}, payer=MEDICARE)
        assert _accepts({"exclude_payer_names_matching": "(?i)medicare"}, payer=BCBS)

    def test_self_pay_charge_only_passes_filters_without_includes(self) -> None:
        """A charge without coverage fails an include filter and passes an exclude one."""
        charge = make_charge(1).model_copy(update={"coverage": []})
        assert not RoutingFilter(payer_ids=["00430"]).compile()(charge)
        assert RoutingFilter(exclude_payer_ids=["00430"]).compile()(charge)

    def test_transaction_types(self) -> None:
        """transaction_types restricts to charges or credits."""
        assert _accepts({"transaction_types": ["credit"]}, transaction_type="credit")
        assert not _accepts({"transaction_types": ["credit"]})

    def test_the_primary_coverage_decides(self) -> None:
        """Only the first coverage is the payer a filter looks at."""
        charge = make_charge(1, payer=BCBS)
        charge.coverage.append(charge.coverage[0].model_copy(update=MEDICARE))
        assert not RoutingFilter(payer_ids=["00430"]).compile()(charge)

    def test_bad_regex_and_unknown_keys_are_rejected(self) -> None:
        """A regex that does not compile, or an unknown setting, fails validation."""
        with pytest.raises(pydantic.ValidationError, match="regular expression"):
            RoutingFilter(payer_names_matching="(medicare")
        with pytest.raises(pydantic.ValidationError):
            RoutingFilter.model_validate({"payer": "medicare"})
