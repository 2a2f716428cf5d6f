"""The scrubber: rules that hold (or warn about) charges a payer would reject.

    scrubber = Scrubber(ScrubSettings.model_validate(config.scrub))
    findings = scrubber.scrub(charges, is_duplicate=store_lookup)  # {charge_id: [Finding]}
"""

from engine.scrub.scrubber import Scrubber, claim_key, duplicate_key
from engine.scrub.settings import RULE_IDS, PayerSettings, PriorAuthRule, RuleSetting, ScrubSettings

__all__ = [
    "RULE_IDS",
    "PayerSettings",
    "PriorAuthRule",
    "RuleSetting",
    "ScrubSettings",
    "Scrubber",
    "claim_key",
    "duplicate_key",
]
