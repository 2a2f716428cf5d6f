"""The Scrubber: runs the rule set over a batch of charges and returns findings per charge.

Rules that look at one charge live in engine.scrub.rules; the two that look across charges
live here: at most 12 diagnoses per claim (per encounter across the batch) and duplicates
(within the batch, and against earlier charges through the store's `is_duplicate`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import date

from engine.charge import Charge, Finding
from engine.scrub.rules import CHARGE_RULES, Policy, Problem
from engine.scrub.settings import RULE_IDS, ScrubSettings

__all__ = ["Scrubber", "claim_key", "duplicate_key"]

_DAY_SECONDS = 86400


def duplicate_key(charge: Charge) -> str:
    """Same patient, date of service, procedure code and modifiers -> the same key."""
    modifiers = ",".join(sorted(charge.procedure.modifiers))
    return "|".join((charge.patient.mrn or "", str(charge.service_date or ""),
                     charge.procedure.code or "", modifiers))


def claim_key(charge: Charge) -> tuple[str, ...]:
    """Charges that go on one claim: patient, encounter, rendering provider, primary payer."""
    payer = charge.coverage[0].payer_id if charge.coverage else None
    return (charge.patient.mrn or "", charge.encounter.id or str(charge.service_date or ""),
            charge.rendering_provider.npi or "", payer or "")


class Scrubber:
    """Configured once from ScrubSettings; `scrub` is called for each message's charges."""

    def __init__(self, settings: ScrubSettings | None = None,
                 today: Callable[[], date] = date.today) -> None:
        self.settings = settings or ScrubSettings()
        self._today = today
        self._policies: dict[str | None, tuple[Policy, dict[str, str | None]]] = {}

    @property
    def duplicate_window_seconds(self) -> int:
        """How far back the store looks for an earlier charge with the same duplicate key."""
        return self.settings.duplicate_window_days * _DAY_SECONDS

    @staticmethod
    def duplicate_key(charge: Charge) -> str:
        """See the module function `duplicate_key`."""
        return duplicate_key(charge)

    def _policy(self, payer_id: str | None, today: date) -> tuple[Policy, dict[str, str | None]]:
        """The policy and the severity of each enabled rule (None = off) for one payer."""
        cached = self._policies.get(payer_id)
        if cached is not None and cached[0].today == today:
            return cached
        s = self.settings
        payer = s.payers.get(payer_id or "")
        severities: dict[str, str | None] = {}
        for rule_id in RULE_IDS:
            setting = (payer.rules.get(rule_id) if payer else None) or s.rules.get(rule_id)
            if setting is not None and not setting.enabled:
                severities[rule_id] = None
            else:
                severities[rule_id] = (setting.severity if setting else None) or "hold"
        modifiers = payer.allowed_modifiers if payer and payer.allowed_modifiers is not None \
            else s.allowed_modifiers
        telehealth = "*" in s.telehealth_payers or (payer_id or "") in s.telehealth_payers
        if payer and payer.telehealth_modifier_required is not None:
            telehealth = payer.telehealth_modifier_required
        prior_auth = frozenset(code for rule in s.prior_auth for code in rule.codes
                               if "*" in rule.payers or (payer_id or "") in rule.payers)
        policy = Policy(payer_id, frozenset(modifiers), frozenset(s.place_of_service_codes),
                        telehealth, tuple(s.telehealth_modifiers), prior_auth, today)
        self._policies[payer_id] = (policy, severities)
        return policy, severities

    def scrub(self, charges: list[Charge], *,
              is_duplicate: Callable[[str], bool] | None = None) -> dict[str, list[Finding]]:
        """Findings for every charge (an empty list when it is clean), keyed by charge_id.

        `is_duplicate(key)` answers whether a charge with that duplicate key was stored
        within the duplicate window (by an earlier message); None skips that question.
        """
        today = self._today()
        out: dict[str, list[Finding]] = {}
        severities_of: dict[str, dict[str, str | None]] = {}
        for charge in charges:
            payer_id = charge.coverage[0].payer_id if charge.coverage else None
            policy, severities = self._policy(payer_id, today)
            severities_of[charge.charge_id] = severities
            findings = out.setdefault(charge.charge_id, [])
            for rule_id, check in CHARGE_RULES.items():
                severity = severities[rule_id]
                if severity is not None:
                    problems = check(charge, policy)
                    if problems:
                        findings += _findings(rule_id, severity, problems)
        self._claims(charges, severities_of, out)
        self._duplicates(charges, severities_of, out, is_duplicate)
        return out

    def _claims(self, charges: list[Charge], severities_of: dict[str, dict[str, str | None]],
                out: dict[str, list[Finding]]) -> None:
        """At most 12 distinct diagnoses on one claim (per encounter across the batch)."""
        limit = self.settings.max_diagnoses_per_claim
        claims: dict[tuple[str, ...], list[Charge]] = defaultdict(list)
        for charge in charges:
            if charge.transaction_type == "charge":
                claims[claim_key(charge)].append(charge)
        for members in claims.values():
            codes = {dx.code.replace(".", "") for c in members for dx in c.diagnoses}
            if len(codes) <= limit:
                continue
            for charge in members:
                severity = severities_of[charge.charge_id]["diagnoses_per_claim"]
                if severity is not None:
                    out[charge.charge_id] += _findings("diagnoses_per_claim", severity, [(
                        "diagnoses", f"The claim for this encounter would carry {len(codes)} "
                                     f"diagnoses; an 837P claim holds at most {limit}. Split "
                                     "the claim or drop unneeded diagnoses")])

    def _duplicates(self, charges: list[Charge], severities_of: dict[str, dict[str, str | None]],
                    out: dict[str, list[Finding]],
                    is_duplicate: Callable[[str], bool] | None) -> None:
        seen: dict[str, str] = {}
        for charge in charges:
            severity = severities_of[charge.charge_id]["duplicate"]
            # A credit repeats its charge's key on purpose: it is never a duplicate.
            if severity is None or charge.transaction_type == "credit":
                continue
            key = duplicate_key(charge)
            problem: Problem | None = None
            if key in seen:
                problem = ("procedure.code", f"Same procedure {charge.procedure.code} for the "
                           f"same patient and date of service twice in this message; add a "
                           "repeat modifier (76, 77, 91, XE...) or merge the units")
            elif is_duplicate is not None and is_duplicate(key):
                problem = ("procedure.code", f"Procedure {charge.procedure.code} was already "
                           f"charged for this patient on {charge.service_date} within the last "
                           f"{self.settings.duplicate_window_days} days: likely a duplicate")
            seen.setdefault(key, charge.charge_id)
            if problem is not None:
                out[charge.charge_id] += _findings("duplicate", severity, [problem])


def _findings(rule_id: str, severity: str, problems: list[Problem]) -> list[Finding]:
    return [Finding(rule=f"scrub.{rule_id}", severity=severity,  # type: ignore[arg-type]
                    field=field, message=message) for field, message in problems]
