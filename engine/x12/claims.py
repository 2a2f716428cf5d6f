"""Grouping normalized charges into 837P claims: keys, splits, diagnosis pointers.

Every rule a claim must satisfy that can be checked on a charge is checked here, so a bad
charge is named (ClaimDataError) before any file is written. A claim's lines point into
the claim's own HI list (1-12), at most four pointers a line.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Literal

from engine.charge import Address, Charge, Coverage
from engine.x12.codes import (
    clean_text,
    icd_code_for_hi,
    npi_is_valid,
    procedure_code_is_valid,
    relationship_code,
    x12_sex,
)
from engine.x12.errors import ClaimDataError
from engine.x12.settings import X12Settings

__all__ = [
    "BillingParty",
    "Claim",
    "ClaimDiagnosis",
    "ClaimLine",
    "Correction",
    "Frequency",
    "Party",
    "PayerInfo",
    "PostalAddress",
    "SubscriberInfo",
    "charge_problems",
    "group_claims",
]

Frequency = Literal["1", "7", "8"]
# charge_id -> (frequency '7' replacement | '8' void, payer claim number for REF*F8 or None)
Correction = tuple[Literal["7", "8"], str | None]

# Builds the ClaimDataError for the charge being checked: fail(field, rule).
_Fail = Callable[[str, str], ClaimDataError]

MAX_POINTERS_PER_LINE = 4
MAX_MODIFIERS_PER_LINE = 4

_STATE = re.compile(r"^[A-Z]{2}$")
_ZIP = re.compile(r"^[0-9]{5}([0-9]{4})?$")
_POS = re.compile(r"^[0-9]{2}$")
_MODIFIER = re.compile(r"^[A-Z0-9]{2}$")


@dataclass(frozen=True)
class PostalAddress:
    """A checked street address (N3/N4)."""

    line1: str
    city: str
    state: str
    postal_code: str
    line2: str | None = None


@dataclass(frozen=True)
class Party:
    """A person named in a claim (NM1 with N3/N4/DMG when known)."""

    last_name: str
    first_name: str | None = None
    middle_name: str | None = None
    birth_date: date | None = None
    sex: str = "U"
    address: PostalAddress | None = None


@dataclass(frozen=True)
class BillingParty:
    """Loop 2010AA billing provider, an organization."""

    npi: str
    name: str
    tax_id: str
    address: PostalAddress
    taxonomy: str | None = None


@dataclass(frozen=True)
class PayerInfo:
    """Loop 2010BB payer and the SBR09 claim filing indicator."""

    payer_id: str
    name: str
    filing_indicator: str


@dataclass(frozen=True)
class SubscriberInfo:
    """Loop 2000B/2010BA: the insured person and the policy."""

    person: Party
    member_id: str
    group_number: str | None
    # X12 relationship of the patient to the subscriber: 18 = self (no 2000C loop).
    relationship: str

    @property
    def is_patient(self) -> bool:
        """True when the patient is the subscriber (SBR02 = 18, no 2000C)."""
        return self.relationship == "18"


@dataclass(frozen=True)
class RenderingProvider:
    """Loop 2310B rendering provider, a person."""

    npi: str
    last_name: str
    first_name: str | None = None


@dataclass(frozen=True)
class ClaimDiagnosis:
    """One HI entry: the code without its dot and its code system."""

    code: str
    system: str | None


@dataclass(frozen=True)
class ClaimLine:
    """Loop 2400: one service line, made from one charge."""

    charge_id: str
    procedure_code: str
    modifiers: tuple[str, ...]
    amount: Decimal
    units: Decimal
    service_date: date
    service_date_end: date | None
    place_of_service: str
    # 1-based pointers into the owning claim's `diagnoses` (SV107), 1 to 4 of them.
    diagnosis_pointers: tuple[int, ...] = ()
    prior_authorization: str | None = None


@dataclass(frozen=True)
class Claim:
    """Loop 2300 with its parties: what one CLM segment and its lines say."""

    claim_id: str
    frequency: Frequency
    payer_claim_number: str | None
    patient: Party
    subscriber: SubscriberInfo
    payer: PayerInfo
    billing: BillingParty
    rendering: RenderingProvider | None
    place_of_service: str
    prior_authorization: str | None
    diagnoses: tuple[ClaimDiagnosis, ...]
    lines: tuple[ClaimLine, ...]

    @property
    def total(self) -> Decimal:
        """CLM02: the sum of the line charges."""
        return sum((line.amount for line in self.lines), Decimal("0"))

    @property
    def charge_ids(self) -> list[str]:
        """The charges billed on this claim, in line order."""
        return [line.charge_id for line in self.lines]


@dataclass
class _Prepared:
    """One checked charge: its line, its claim-level parties and its grouping key."""

    line: ClaimLine
    # All the charge's diagnoses in order, and the ones its pointers select (at most 4).
    diagnoses: list[ClaimDiagnosis]
    pointed: list[ClaimDiagnosis]
    patient: Party
    subscriber: SubscriberInfo
    payer: PayerInfo
    billing: BillingParty
    rendering: RenderingProvider | None
    frequency: Frequency
    payer_claim_number: str | None
    key: tuple[object, ...] = field(default=())


def group_claims(
    charges: list[Charge],
    settings: X12Settings,
    corrections: Mapping[str, Correction] | None = None,
) -> list[Claim]:
    """Group charges into claims by `settings.claim_grouping`, splitting at the limits.

    `corrections` marks charges that correct a claim already sent: frequency '7'
    (replacement) or '8' (void) with the payer's claim number when known; every other
    charge is an original ('1'). A credit must be a correction. Originals and each kind
    of correction never share a claim. A claim splits when it would exceed
    `max_lines_per_claim` lines or `max_diagnoses_per_claim` pointed-to diagnoses.
    Raises ClaimDataError for the first charge that cannot be billed.
    """
    corrections = corrections or {}
    groups: dict[tuple[object, ...], list[_Prepared]] = {}
    for charge in charges:
        prepared = _prepare(charge, settings, corrections.get(charge.charge_id))
        groups.setdefault(prepared.key, []).append(prepared)
    claims: list[Claim] = []
    for members in groups.values():
        for chunk in _split(members, settings):
            claims.append(_build_claim(chunk, settings))
    return claims


def charge_problems(
    charges: Iterable[Charge],
    settings: X12Settings,
    corrections: Mapping[str, Correction] | None = None,
) -> dict[str, ClaimDataError]:
    """The charges that cannot be billed, by charge id, so a batch can set them aside."""
    corrections = corrections or {}
    problems: dict[str, ClaimDataError] = {}
    for charge in charges:
        try:
            _prepare(charge, settings, corrections.get(charge.charge_id))
        except ClaimDataError as exc:
            problems[charge.charge_id] = exc
    return problems


# --- one charge -------------------------------------------------------------------------


def _prepare(charge: Charge, settings: X12Settings, correction: Correction | None) -> _Prepared:
    cid = charge.charge_id

    def fail(where: str, rule: str) -> ClaimDataError:
        return ClaimDataError(cid, where, rule)

    frequency: Frequency = correction[0] if correction else "1"
    payer_claim_number = _text(correction[1]) or None if correction else None
    if charge.transaction_type == "credit" and frequency == "1":
        raise fail("transaction_type", "a credit can only void (8) or replace (7) a claim "
                   "already sent; no correction was given for it")

    line = _line(charge, fail)
    diagnoses, pointed = _diagnoses(charge, fail)
    patient = _patient(charge, fail)
    subscriber = _subscriber(charge, patient, fail)
    payer = _payer(charge, settings, fail)
    billing = _billing(charge, settings, fail)
    rendering = _rendering(charge, billing, fail)

    prepared = _Prepared(
        line=line, diagnoses=diagnoses, pointed=pointed, patient=patient,
        subscriber=subscriber, payer=payer, billing=billing, rendering=rendering,
        frequency=frequency, payer_claim_number=payer_claim_number,
    )
    prepared.key = _key(charge, prepared, settings)
    return prepared


def _key(charge: Charge, p: _Prepared, settings: X12Settings) -> tuple[object, ...]:
    parts: dict[str, object] = {
        "patient": (charge.patient.mrn,) if charge.patient.mrn else (
            p.patient.last_name, p.patient.first_name, p.patient.birth_date),
        "payer": (p.payer.payer_id, p.subscriber.member_id, p.subscriber.relationship),
        "billing_provider": p.billing.npi,
        "rendering_provider": p.rendering.npi if p.rendering else None,
        "encounter": charge.encounter.id,
        "service_date": p.line.service_date,
        "place_of_service": p.line.place_of_service,
    }
    # Corrections are claims of their own: a void never carries an original's lines.
    always = (p.frequency, p.payer_claim_number, charge.transaction_type)
    return always + tuple(parts[name] for name in settings.claim_grouping)


def _text(value: str | None) -> str:
    """What of a value survives in an X12 element (delimiters and control characters go)."""
    return clean_text(value or "", upper=False)


def _line(charge: Charge, fail: _Fail) -> ClaimLine:
    code = (charge.procedure.code or "").strip().upper()
    if not code:
        raise fail("procedure.code", "a service line needs a procedure code (SV101-2)")
    if not procedure_code_is_valid(code):
        raise fail("procedure.code", f"{code!r} is not a CPT or HCPCS code (SV101 qualifier HC)")
    modifiers = tuple(m.strip().upper() for m in charge.procedure.modifiers if m.strip())
    if len(modifiers) > MAX_MODIFIERS_PER_LINE:
        raise fail("procedure.modifiers", f"{len(modifiers)} modifiers; SV101 holds at most 4")
    for i, modifier in enumerate(modifiers):
        if not _MODIFIER.match(modifier):
            raise fail(f"procedure.modifiers[{i}]", f"{modifier!r} is not a 2-character modifier")
    if charge.amount is None:
        raise fail("amount", "a service line needs a charge amount (SV102)")
    amount = charge.amount
    if charge.transaction_type == "credit":
        # A credit voids or replaces lines already billed: the claim restates them.
        amount = abs(amount)
    elif amount < 0:
        raise fail("amount", f"{amount} is negative; a charge amount must be 0 or more")
    units = Decimal("1") if charge.units is None else charge.units
    if charge.transaction_type == "credit":
        units = abs(units)
    if units <= 0:
        raise fail("units", f"{units} units; a service line needs a positive unit count")
    if charge.service_date is None:
        raise fail("service_date", "a service line needs a date of service (DTP*472)")
    end = charge.service_date_end
    if end is not None and end < charge.service_date:
        raise fail("service_date_end", "the service period ends before it starts")
    pos = (charge.place_of_service or "").strip()
    if not _POS.match(pos):
        raise fail("place_of_service", f"{pos or None!r} is not a 2-digit CMS place of service")
    auth = (charge.prior_authorization or "").strip() or None
    if auth and not _text(auth):
        raise fail("prior_authorization", f"{auth!r} has nothing X12 can carry")
    return ClaimLine(
        charge_id=charge.charge_id, procedure_code=code, modifiers=modifiers,
        amount=amount, units=units, service_date=charge.service_date,
        service_date_end=end if end != charge.service_date else None,
        place_of_service=pos, prior_authorization=auth,
    )


def _diagnoses(charge: Charge, fail: _Fail) -> tuple[list[ClaimDiagnosis], list[ClaimDiagnosis]]:
    if not charge.diagnoses:
        raise fail("diagnoses", "a service line needs at least one diagnosis (SV107)")
    found: list[ClaimDiagnosis] = []
    for i, dx in enumerate(charge.diagnoses):
        code = icd_code_for_hi(dx.code, dx.system)
        if code is None:
            raise fail(f"diagnoses[{i}].code", f"{dx.code!r} is not a valid {dx.system} code")
        found.append(ClaimDiagnosis(code=code, system=dx.system))
    pointers = charge.diagnosis_pointers or list(range(1, len(found) + 1))
    for i, pointer in enumerate(pointers):
        if not 1 <= pointer <= len(found):
            raise fail(f"diagnosis_pointers[{i}]",
                       f"{pointer} points outside the charge's {len(found)} diagnoses")
    # SV107 holds four pointers; the first four are the ones the coder ranked highest.
    pointed: list[ClaimDiagnosis] = []
    for pointer in pointers:
        chosen = found[pointer - 1]
        if chosen not in pointed:
            pointed.append(chosen)
        if len(pointed) == MAX_POINTERS_PER_LINE:
            break
    return found, pointed


def _address(charge_address: Address, where: str, fail: _Fail) -> PostalAddress:
    line1 = _text(charge_address.line1)
    city = _text(charge_address.city)
    state = (charge_address.state or "").strip().upper()
    postal = (charge_address.postal_code or "").replace("-", "").replace(" ", "")
    if not line1:
        raise fail(f"{where}.line1", "an address needs a street line (N301)")
    if len(city) < 2:
        raise fail(f"{where}.city", "an address needs a city (N401)")
    if not _STATE.match(state):
        raise fail(f"{where}.state", f"{state or None!r} is not a 2-letter state code (N402)")
    if not _ZIP.match(postal):
        raise fail(f"{where}.postal_code", f"{postal or None!r} is not a 5- or 9-digit ZIP")
    return PostalAddress(
        line1=line1, line2=(charge_address.line2 or "").strip() or None,
        city=city, state=state, postal_code=postal,
    )


def _patient(charge: Charge, fail: _Fail) -> Party:
    p = charge.patient
    if not _text(p.last_name):
        raise fail("patient.last_name", "a claim needs the patient's last name")
    return Party(
        last_name=p.last_name or "", first_name=p.first_name, middle_name=p.middle_name,
        birth_date=p.birth_date, sex=x12_sex(p.sex),
        address=_address(p.address, "patient.address", fail),
    )


def _primary(charge: Charge, fail: _Fail) -> Coverage:
    if not charge.coverage:
        raise fail("coverage", "an 837P claim needs a primary coverage (self-pay is not billed)")
    return charge.coverage[0]


def _subscriber(charge: Charge, patient: Party, fail: _Fail) -> SubscriberInfo:
    cov = _primary(charge, fail)
    member_id = _text(cov.member_id)
    if len(member_id) < 2:
        raise fail("coverage[0].member_id", "the subscriber needs a member id (2010BA NM109)")
    sub = cov.subscriber
    relationship = relationship_code(cov.relationship)
    if cov.relationship and relationship is None:
        raise fail("coverage[0].relationship",
                   f"{cov.relationship!r} is not a known relationship (X12, HL7 0063 or FHIR)")
    if relationship is None:
        # No relationship given: the patient is the subscriber unless another name is there.
        same = not sub.last_name or (
            sub.last_name.strip().casefold() == patient.last_name.strip().casefold()
            and (sub.first_name or "").strip().casefold()
            == (patient.first_name or "").strip().casefold()
        )
        relationship = "18" if same else "21"
    if relationship == "18":
        if patient.birth_date is None:
            raise fail("patient.birth_date", "the subscriber's DMG needs the patient's birth date")
        person = patient
    else:
        if patient.birth_date is None:
            raise fail("patient.birth_date", "the 2010CA patient DMG needs a birth date")
        if not _text(sub.last_name):
            raise fail("coverage[0].subscriber.last_name",
                       "the patient is not the subscriber, so the subscriber's name is needed")
        person = Party(
            last_name=sub.last_name or "", first_name=sub.first_name,
            birth_date=sub.birth_date, sex=x12_sex(sub.sex),
        )
    group = (cov.group_number or "").strip() or None
    return SubscriberInfo(
        person=person, member_id=member_id, group_number=group, relationship=relationship,
    )


def _payer(charge: Charge, settings: X12Settings, fail: _Fail) -> PayerInfo:
    cov = _primary(charge, fail)
    name = _text(cov.payer_name)
    if not name:
        raise fail("coverage[0].payer_name", "the payer needs a name (2010BB NM103)")
    payer_id = _text(settings.payer_id_for(name, cov.payer_id))
    if len(payer_id) < 2:
        raise fail("coverage[0].payer_id",
                   f"no payer id for {name!r}: add it to the payer table or send IN1-3")
    return PayerInfo(
        payer_id=payer_id, name=name,
        filing_indicator=settings.filing_indicator_for(name, cov.payer_id),
    )


def _billing(charge: Charge, settings: X12Settings, fail: _Fail) -> BillingParty:
    default = settings.billing_provider
    bp = charge.billing_provider
    npi = (bp.npi or "").strip()
    if not npi or npi == default.npi:
        # The configured billing provider; a charge may not override its address piecemeal.
        a = default.address
        return BillingParty(
            npi=default.npi, name=default.name, tax_id=default.tax_id,
            taxonomy=default.taxonomy,
            address=PostalAddress(a.line1, a.city, a.state, a.postal_code, a.line2),
        )
    if not npi_is_valid(npi):
        raise fail("billing_provider.npi", f"{npi!r} is not a valid NPI (check digit)")
    if not _text(bp.name):
        raise fail("billing_provider.name", "a billing provider other than the default "
                   "needs its name")
    tax_id = (bp.tax_id or "").replace("-", "")
    if not re.fullmatch(r"[0-9]{9}", tax_id):
        raise fail("billing_provider.tax_id", "a billing provider needs a 9-digit tax id")
    return BillingParty(
        npi=npi, name=bp.name or "", tax_id=tax_id,
        address=_address(bp.address, "billing_provider.address", fail),
    )


def _rendering(charge: Charge, billing: BillingParty, fail: _Fail) -> RenderingProvider | None:
    rp = charge.rendering_provider
    npi = (rp.npi or "").strip()
    if not npi or npi == billing.npi:
        return None
    if not npi_is_valid(npi):
        raise fail("rendering_provider.npi", f"{npi!r} is not a valid NPI (check digit)")
    if not _text(rp.last_name):
        raise fail("rendering_provider.last_name",
                   "a rendering provider other than the billing provider needs a last name")
    return RenderingProvider(npi=npi, last_name=rp.last_name or "", first_name=rp.first_name)


# --- claims from checked charges --------------------------------------------------------


def _split(members: list[_Prepared], settings: X12Settings) -> list[list[_Prepared]]:
    """Greedy chunks in line order that respect the line and diagnosis limits."""
    chunks: list[list[_Prepared]] = []
    current: list[_Prepared] = []
    codes: set[ClaimDiagnosis] = set()
    for member in members:
        needed = codes | set(member.pointed)
        if current and (
            len(current) >= settings.max_lines_per_claim
            or len(needed) > settings.max_diagnoses_per_claim
        ):
            chunks.append(current)
            current, needed = [], set(member.pointed)
        current.append(member)
        codes = needed
    if current:
        chunks.append(current)
    return chunks


def _hi_list(chunk: list[_Prepared], limit: int) -> list[ClaimDiagnosis]:
    """HI order: diagnoses in order of appearance; unpointed ones only where room is left."""
    required = {dx for m in chunk for dx in m.pointed}
    ordered: list[ClaimDiagnosis] = []
    for member in chunk:
        for dx in member.pointed + member.diagnoses:
            if dx not in ordered:
                ordered.append(dx)
    hi: list[ClaimDiagnosis] = []
    for dx in ordered:
        pending_required = len(required - set(hi) - {dx})
        if dx in required or len(hi) + 1 + pending_required <= limit:
            hi.append(dx)
    return hi[:limit]


def _build_claim(chunk: list[_Prepared], settings: X12Settings) -> Claim:
    first = chunk[0]
    hi = _hi_list(chunk, settings.max_diagnoses_per_claim)
    index = {dx: i + 1 for i, dx in enumerate(hi)}
    auths = {m.line.prior_authorization for m in chunk}
    claim_auth = next(iter(auths)) if len(auths) == 1 else None
    lines = tuple(
        ClaimLine(
            charge_id=m.line.charge_id, procedure_code=m.line.procedure_code,
            modifiers=m.line.modifiers, amount=m.line.amount, units=m.line.units,
            service_date=m.line.service_date, service_date_end=m.line.service_date_end,
            place_of_service=m.line.place_of_service,
            diagnosis_pointers=tuple(index[dx] for dx in m.pointed),
            # One authorization for every line goes on the claim (2300 REF*G1), else per line.
            prior_authorization=None if claim_auth else m.line.prior_authorization,
        )
        for m in chunk
    )
    return Claim(
        claim_id=_claim_id(first.frequency, [m.line.charge_id for m in chunk]),
        frequency=first.frequency, payer_claim_number=first.payer_claim_number,
        patient=first.patient, subscriber=first.subscriber, payer=first.payer,
        billing=first.billing, rendering=first.rendering,
        place_of_service=first.line.place_of_service, prior_authorization=claim_auth,
        diagnoses=tuple(hi), lines=lines,
    )


def _claim_id(frequency: str, charge_ids: list[str]) -> str:
    """CLM01: 20 characters from the claim's charges, so a rebuilt claim keeps its id."""
    digest = hashlib.sha256("\x1f".join([frequency, *sorted(charge_ids)]).encode()).hexdigest()
    return "CB" + digest[:18].upper()

