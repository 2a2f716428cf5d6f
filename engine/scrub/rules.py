"""The per-charge scrub rules: each looks at one charge and says what a payer would reject.

A rule is `check(charge, policy) -> list[(field, message)]`; the Scrubber adds the rule id
and severity. Messages are written for billers: what is wrong and what to fix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from engine.charge import Charge
from engine.scrub.codes import CPT, HCPCS_II, ICD10_CM, PLACE_OF_SERVICE, npi_is_valid

__all__ = ["CHARGE_RULES", "Policy", "Problem"]

Problem = tuple[str | None, str]


@dataclass(frozen=True)
class Policy:
    """The settings that apply to one charge (its primary payer's overrides resolved)."""

    payer_id: str | None
    allowed_modifiers: frozenset[str]
    place_of_service_codes: frozenset[str]
    telehealth_required: bool
    telehealth_modifiers: tuple[str, ...]
    prior_auth_codes: frozenset[str]
    today: date


def _required_fields(charge: Charge, _policy: Policy) -> list[Problem]:
    missing: list[Problem] = []

    def need(value: object, field: str, what: str) -> None:
        if value is None or value == "" or value == []:
            missing.append((field, f"{what} is missing; an 837P claim cannot be sent without it"))

    patient = charge.patient
    need(patient.mrn, "patient.mrn", "Patient account number (MRN)")
    need(patient.last_name, "patient.last_name", "Patient last name")
    need(patient.first_name, "patient.first_name", "Patient first name")
    need(patient.birth_date, "patient.birth_date", "Patient date of birth")
    need(patient.sex, "patient.sex", "Patient sex")
    need(patient.address.line1, "patient.address.line1", "Patient street address")
    need(patient.address.city, "patient.address.city", "Patient city")
    need(patient.address.state, "patient.address.state", "Patient state")
    need(patient.address.postal_code, "patient.address.postal_code", "Patient ZIP code")
    need(charge.service_date, "service_date", "Date of service")
    need(charge.procedure.code, "procedure.code", "Procedure code (CPT/HCPCS)")
    need(charge.units, "units", "Units")
    need(charge.amount, "amount", "Charge amount")
    need(charge.diagnoses, "diagnoses", "At least one diagnosis")
    need(charge.place_of_service, "place_of_service", "Place of service")
    need(charge.coverage, "coverage", "Insurance coverage")
    if charge.coverage:
        primary = charge.coverage[0]
        need(primary.payer_id, "coverage[0].payer_id", "Primary payer id")
        need(primary.payer_name, "coverage[0].payer_name", "Primary payer name")
        need(primary.member_id, "coverage[0].member_id", "Primary member id")
        if primary.relationship not in (None, "18", "SEL", "self"):
            # Patient is not the subscriber: the subscriber loop needs a name.
            need(primary.subscriber.last_name, "coverage[0].subscriber.last_name",
                 "Subscriber last name")
            need(primary.subscriber.first_name, "coverage[0].subscriber.first_name",
                 "Subscriber first name")
    return missing


def _npi(charge: Charge, _policy: Policy) -> list[Problem]:
    problems: list[Problem] = []
    for field, npi, who in (("rendering_provider.npi", charge.rendering_provider.npi,
                             "Rendering provider"),
                            ("billing_provider.npi", charge.billing_provider.npi,
                             "Billing provider")):
        if npi and not npi_is_valid(npi):
            problems.append((field, f"{who} NPI {npi} is not a valid NPI (10 digits with a "
                                    "correct check digit); check the provider's NPI"))
    return problems


def _icd10(charge: Charge, _policy: Policy) -> list[Problem]:
    problems: list[Problem] = []
    for i, dx in enumerate(charge.diagnoses):
        field = f"diagnoses[{i}].code"
        if dx.system not in ("ICD-10-CM", None):
            problems.append((field, f"Diagnosis {dx.code} is coded in {dx.system}; claims need "
                                    "ICD-10-CM codes"))
        elif not ICD10_CM.match(dx.code):
            problems.append((field, f"Diagnosis {dx.code!r} is not an ICD-10-CM code "
                                    "(letter, digit, letter/digit, then up to 4 characters, "
                                    "e.g. E11.9)"))
    return problems


def _procedure_code(charge: Charge, _policy: Policy) -> list[Problem]:
    code = charge.procedure.code
    if code and not (CPT.match(code) or HCPCS_II.match(code)):
        return [("procedure.code", f"Procedure code {code!r} is neither a CPT code (5 digits, "
                                   "or 4 digits + F/T/U) nor a HCPCS code (letter + 4 digits)")]
    return []


def _place_of_service(charge: Charge, policy: Policy) -> list[Problem]:
    pos = charge.place_of_service
    if pos and pos not in policy.place_of_service_codes:
        return [("place_of_service", f"Place of service {pos!r} is not in the CMS place of "
                                     "service code list (e.g. 11 office, 02/10 telehealth)")]
    return []


def _modifiers(charge: Charge, policy: Policy) -> list[Problem]:
    modifiers = charge.procedure.modifiers
    problems: list[Problem] = []
    if len(modifiers) > 4:
        problems.append(("procedure.modifiers", f"{len(modifiers)} modifiers on one line; an "
                                                "837P line carries at most 4"))
    if policy.allowed_modifiers:
        for modifier in modifiers:
            if modifier not in policy.allowed_modifiers:
                problems.append(("procedure.modifiers",
                                 f"Modifier {modifier!r} is not on the accepted modifier list"))
    return problems


def _telehealth(charge: Charge, policy: Policy) -> list[Problem]:
    from engine.scrub.codes import TELEHEALTH_POS

    if (policy.telehealth_required and charge.place_of_service in TELEHEALTH_POS
            and not set(policy.telehealth_modifiers) & set(charge.procedure.modifiers)):
        where = PLACE_OF_SERVICE.get(charge.place_of_service or "", "telehealth")
        return [("procedure.modifiers",
                 f"Telehealth visit (POS {charge.place_of_service}, {where.lower()}) needs "
                 f"modifier {' or '.join(policy.telehealth_modifiers)} for this payer")]
    return []


def _service_date(charge: Charge, policy: Policy) -> list[Problem]:
    start = charge.service_date
    if start is None:
        return []
    problems: list[Problem] = []
    if start > policy.today:
        problems.append(("service_date", f"Date of service {start} is in the future"))
    birth = charge.patient.birth_date
    if birth is not None and start < birth:
        problems.append(("service_date", f"Date of service {start} is before the patient's "
                                         "date of birth"))
    end = charge.service_date_end
    if end is not None and end < start:
        problems.append(("service_date_end", f"Service end date {end} is before the start "
                                             f"date {start}"))
    admit, discharge = charge.encounter.admit_date, charge.encounter.discharge_date
    if admit is not None and start < admit:
        problems.append(("service_date", f"Date of service {start} is before the encounter's "
                                         f"admit date {admit}"))
    if discharge is not None and (end or start) > discharge:
        problems.append(("service_date", f"Date of service {end or start} is after the "
                                         f"encounter's discharge date {discharge}"))
    return problems


def _units_amount(charge: Charge, _policy: Policy) -> list[Problem]:
    problems: list[Problem] = []
    units, amount = charge.units, charge.amount
    if charge.transaction_type == "credit":
        if amount is not None and amount >= 0:
            problems.append(("amount", f"Credit amount {amount} must be negative"))
        if units is not None and units == 0:
            problems.append(("units", "Credit units must not be zero"))
        return problems
    if units is not None and units <= 0:
        problems.append(("units", f"Units {units} must be more than zero"))
    if amount is not None and amount <= 0:
        problems.append(("amount", f"Charge amount {amount} must be more than zero"))
    return problems


def _pointers(charge: Charge, _policy: Policy) -> list[Problem]:
    pointers = charge.diagnosis_pointers
    problems: list[Problem] = []
    if len(pointers) > 4:
        problems.append(("diagnosis_pointers", f"{len(pointers)} diagnosis pointers; a line "
                                               "points at most at 4 diagnoses"))
    count = len(charge.diagnoses)
    for pointer in pointers:
        if not 1 <= pointer <= min(count, 12):
            problems.append(("diagnosis_pointers",
                             f"Diagnosis pointer {pointer} does not point at one of the "
                             f"{count} diagnoses of this charge"))
    return problems


def _prior_auth(charge: Charge, policy: Policy) -> list[Problem]:
    if charge.procedure.code in policy.prior_auth_codes and not charge.prior_authorization:
        return [("prior_authorization",
                 f"Procedure {charge.procedure.code} needs a prior authorization number for "
                 f"payer {policy.payer_id or '(none)'}; none was sent")]
    return []


CHARGE_RULES: dict[str, Callable[[Charge, Policy], list[Problem]]] = {
    "required_fields": _required_fields,
    "npi_check_digit": _npi,
    "icd10_format": _icd10,
    "procedure_code_format": _procedure_code,
    "place_of_service": _place_of_service,
    "modifiers": _modifiers,
    "telehealth_modifier": _telehealth,
    "service_date": _service_date,
    "units_amount": _units_amount,
    "diagnosis_pointers": _pointers,
    "prior_authorization": _prior_auth,
}
