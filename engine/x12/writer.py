"""The 837P 005010X222A1 writer: claims and control numbers in, one interchange out.

A file is one ISA/GS interchange. Claims go into ST/SE transaction sets of at most
MAX_CLAIMS_PER_TRANSACTION claims (the TR3's recommended ceiling), numbered from
`ControlNumbers.transaction_start`; one 2000A loop per billing provider, and one 2000B
(plus 2000C when the patient is not the subscriber) per claim. Segments end with `~` and a
newline, which pyx12 accepts. Data elements are cleaned of the delimiters * : ~ ^; a
required value that cleans to nothing raises ClaimDataError instead of writing a bad file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from engine.x12.claims import Claim, ClaimLine, Party, PostalAddress
from engine.x12.codes import clean_text, diagnosis_qualifiers
from engine.x12.errors import ClaimDataError, X12Error
from engine.x12.settings import X12Settings

__all__ = [
    "IMPLEMENTATION_GUIDE",
    "MAX_CLAIMS_PER_TRANSACTION",
    "ControlNumbers",
    "render_837p",
    "transaction_count",
]

IMPLEMENTATION_GUIDE = "005010X222A1"
MAX_CLAIMS_PER_TRANSACTION = 5000
_MAX_CONTROL = 999_999_999
SEGMENT_TERMINATOR = "~\n"


@dataclass(frozen=True)
class ControlNumbers:
    """Envelope numbers from the store: ISA13/IEA02, GS06/GE02, the first ST02/SE02.

    The caller draws them from durable counters so they are never reused; a file uses
    `transaction_count(claims)` consecutive ST numbers starting at `transaction_start`.
    """

    interchange: int
    group: int
    transaction_start: int = 1


def transaction_count(claims: list[Claim]) -> int:
    """How many ST/SE sets (and so ST control numbers) render_837p uses for these claims."""
    return max(1, -(-len(claims) // MAX_CLAIMS_PER_TRANSACTION))


def render_837p(
    claims: list[Claim],
    settings: X12Settings,
    control: ControlNumbers,
    *,
    now: datetime | None = None,
) -> str:
    """The text of one 837P interchange holding `claims`.

    `now` stamps ISA09/ISA10, GS04/GS05 and BHT04/BHT05 (local time by default).
    Raises ClaimDataError when a required value is empty once cleaned, X12Error when
    there are no claims or a control number is out of range.
    """
    if not claims:
        raise X12Error("an 837P file needs at least one claim")
    sets = transaction_count(claims)
    for name, value, top in (
        ("interchange", control.interchange, _MAX_CONTROL),
        ("group", control.group, _MAX_CONTROL),
        ("transaction_start", control.transaction_start, _MAX_CONTROL - sets + 1),
    ):
        if not 1 <= value <= top:
            raise X12Error(f"control number {name}={value} is outside 1..{top}")
    stamp = now or datetime.now()
    out: list[str] = [_isa(settings, control, stamp), _gs(settings, control, stamp)]
    for i in range(sets):
        chunk = claims[i * MAX_CLAIMS_PER_TRANSACTION:(i + 1) * MAX_CLAIMS_PER_TRANSACTION]
        body = list(_transaction(chunk, settings, control, control.transaction_start + i, stamp))
        out.extend(body)
    out.append(_seg("GE", str(sets), str(control.group)))
    out.append(_seg("IEA", "1", f"{control.interchange:09d}"))
    return "".join(out)


# --- envelope ---------------------------------------------------------------------------


def _isa(settings: X12Settings, control: ControlNumbers, stamp: datetime) -> str:
    ic = settings.interchange
    # ISA is fixed width: every element padded, and its terminator sets the delimiters.
    elements = [
        "ISA", "00", " " * 10, "00", " " * 10,
        ic.sender_qualifier, ic.sender_id.ljust(15), ic.receiver_qualifier,
        ic.receiver_id.ljust(15), stamp.strftime("%y%m%d"), stamp.strftime("%H%M"),
        "^", "00501", f"{control.interchange:09d}",
        "1" if ic.acknowledgment_requested else "0", settings.usage_indicator, ":",
    ]
    return "*".join(elements) + SEGMENT_TERMINATOR


def _gs(settings: X12Settings, control: ControlNumbers, stamp: datetime) -> str:
    ic = settings.interchange
    return _seg(
        "GS", "HC",
        _text(ic.application_sender_code or ic.sender_id, upper=False, max_len=15),
        _text(ic.application_receiver_code or ic.receiver_id, upper=False, max_len=15),
        stamp.strftime("%Y%m%d"), stamp.strftime("%H%M"), str(control.group), "X",
        IMPLEMENTATION_GUIDE,
    )


def _transaction(
    claims: list[Claim], settings: X12Settings, control: ControlNumbers, number: int,
    stamp: datetime,
) -> Iterator[str]:
    st_number = f"{number:04d}"
    segments = [
        _seg("ST", "837", st_number, IMPLEMENTATION_GUIDE),
        _seg("BHT", "0019", "00", f"CB{control.interchange:09d}{st_number}",
             stamp.strftime("%Y%m%d"), stamp.strftime("%H%M"), "CH"),
        *_header(settings),
        *_detail(claims),
    ]
    yield from segments
    yield _seg("SE", str(len(segments) + 1), st_number)


def _header(settings: X12Settings) -> list[str]:
    sub, rec = settings.submitter, settings.receiver
    return [
        _seg("NM1", "41", "2", _text(sub.name, max_len=60), "", "", "", "", "46",
             _text(sub.id, upper=False, max_len=80)),
        _seg("PER", "IC", _text(sub.contact_name, max_len=60), "TE", sub.contact_phone),
        _seg("NM1", "40", "2", _text(rec.name, max_len=60), "", "", "", "", "46",
             _text(rec.id, upper=False, max_len=80)),
    ]


# --- detail -----------------------------------------------------------------------------


def _detail(claims: list[Claim]) -> Iterator[str]:
    by_billing: dict[str, list[Claim]] = {}
    for claim in claims:
        by_billing.setdefault(claim.billing.npi, []).append(claim)
    hl = 0
    for group in by_billing.values():
        hl += 1
        billing_hl = hl
        bp = group[0].billing
        where = _Where(group[0])
        yield _seg("HL", str(billing_hl), "", "20", "1")
        if bp.taxonomy:
            yield _seg("PRV", "BI", "PXC", bp.taxonomy)
        yield _seg("NM1", "85", "2", where.text(bp.name, "billing_provider.name", 60),
                   "", "", "", "", "XX", bp.npi)
        yield from _address(bp.address, where, "billing_provider.address")
        yield _seg("REF", "EI", bp.tax_id)
        for claim in group:
            hl += 1
            subscriber_hl = hl
            sub = claim.subscriber
            w = _Where(claim)
            yield _seg("HL", str(subscriber_hl), str(billing_hl), "22",
                       "0" if sub.is_patient else "1")
            yield _seg("SBR", "P", "18" if sub.is_patient else "",
                       _text(sub.group_number or "", upper=False, max_len=50),
                       "", "", "", "", "", claim.payer.filing_indicator)
            yield _name("IL", sub.person, w,
                        "patient" if sub.is_patient else "coverage[0].subscriber",
                        id_qualifier="MI",
                        identifier=w.text(sub.member_id, "coverage[0].member_id", 80, False))
            if sub.is_patient:
                yield from _address(_required_address(sub.person, w), w, "patient.address")
                yield _dmg(sub.person, w, "patient.birth_date")
            elif sub.person.birth_date is not None:
                yield _dmg(sub.person, w, "coverage[0].subscriber.birth_date")
            yield _seg("NM1", "PR", "2", w.text(claim.payer.name, "coverage[0].payer_name", 60),
                       "", "", "", "", "PI",
                       w.text(claim.payer.payer_id, "coverage[0].payer_id", 80, False))
            if not sub.is_patient:
                hl += 1
                yield _seg("HL", str(hl), str(subscriber_hl), "23", "0")
                yield _seg("PAT", sub.relationship)
                yield _name("QC", claim.patient, w, "patient")
                yield from _address(_required_address(claim.patient, w), w, "patient.address")
                yield _dmg(claim.patient, w, "patient.birth_date")
            yield from _claim(claim, w)


def _claim(claim: Claim, w: _Where) -> Iterator[str]:
    yield _seg("CLM", claim.claim_id, _amount(claim.total), "", "",
               _composite(claim.place_of_service, "B", claim.frequency), "Y", "A", "Y", "Y")
    if claim.prior_authorization:
        yield _seg("REF", "G1", w.text(claim.prior_authorization, "prior_authorization", 50,
                                       False))
    if claim.frequency in ("7", "8") and claim.payer_claim_number:
        yield _seg("REF", "F8", w.text(claim.payer_claim_number, "payer_claim_number", 50,
                                       False))
    hi: list[str] = []
    for i, dx in enumerate(claim.diagnoses):
        principal, other = diagnosis_qualifiers(dx.system)
        hi.append(_composite(principal if i == 0 else other, dx.code))
    yield _seg("HI", *hi)
    if claim.rendering is not None:
        r = claim.rendering
        yield _seg("NM1", "82", "1", w.text(r.last_name, "rendering_provider.last_name", 60),
                   _text(r.first_name or "", max_len=35), "", "", "", "XX", r.npi)
    for number, line in enumerate(claim.lines, start=1):
        yield from _line(number, line, claim)


def _line(number: int, line: ClaimLine, claim: Claim) -> Iterator[str]:
    w = _Where(claim, line.charge_id)
    yield _seg("LX", str(number))
    yield _seg(
        "SV1", _composite("HC", line.procedure_code, *line.modifiers), _amount(line.amount),
        "UN", _quantity(line.units),
        line.place_of_service if line.place_of_service != claim.place_of_service else "",
        "", _composite(*(str(p) for p in line.diagnosis_pointers)),
    )
    if line.service_date_end is not None:
        yield _seg("DTP", "472", "RD8",
                   f"{_date(line.service_date)}-{_date(line.service_date_end)}")
    else:
        yield _seg("DTP", "472", "D8", _date(line.service_date))
    if line.prior_authorization:
        yield _seg("REF", "G1", w.text(line.prior_authorization, "prior_authorization", 50,
                                       False))
    # Line item control number: ties a remittance line back to the charge.
    yield _seg("REF", "6R", w.text(line.charge_id, "charge_id", 50, False))


def _name(
    entity: str, person: Party, w: _Where, where: str, *, id_qualifier: str = "",
    identifier: str = "",
) -> str:
    return _seg(
        "NM1", entity, "1", w.text(person.last_name, f"{where}.last_name", 60),
        _text(person.first_name or "", max_len=35), _text(person.middle_name or "", max_len=25),
        "", "", id_qualifier, identifier,
    )


def _required_address(person: Party, w: _Where) -> PostalAddress:
    if person.address is None:
        raise ClaimDataError(w.charge_id, "patient.address", "the patient's address is needed")
    return person.address


def _address(address: PostalAddress, w: _Where, where: str) -> Iterator[str]:
    yield _seg("N3", w.text(address.line1, f"{where}.line1", 55),
               _text(address.line2 or "", max_len=55))
    yield _seg("N4", w.text(address.city, f"{where}.city", 30), address.state,
               address.postal_code)


def _dmg(person: Party, w: _Where, where: str) -> str:
    if person.birth_date is None:
        raise ClaimDataError(w.charge_id, where, "a DMG segment needs a birth date")
    return _seg("DMG", "D8", _date(person.birth_date), person.sex)


# --- elements ---------------------------------------------------------------------------


class _Where:
    """Names the charge a claim-level value came from when it turns out unusable."""

    def __init__(self, claim: Claim, charge_id: str | None = None) -> None:
        self.charge_id = charge_id or claim.lines[0].charge_id

    def text(self, value: str, field: str, max_len: int, upper: bool = True) -> str:
        cleaned = _text(value, upper=upper, max_len=max_len)
        if not cleaned:
            raise ClaimDataError(self.charge_id, field,
                                 f"{value!r} is empty once X12 delimiters are removed")
        return cleaned


def _text(value: str, *, upper: bool = True, max_len: int | None = None) -> str:
    return clean_text(value, upper=upper, max_len=max_len)


def _seg(seg_id: str, *elements: str) -> str:
    values = list(elements)
    while values and values[-1] == "":
        values.pop()  # trailing empty elements are not written
    return "*".join([seg_id, *values]) + SEGMENT_TERMINATOR


def _composite(*components: str) -> str:
    values = list(components)
    while values and values[-1] == "":
        values.pop()
    return ":".join(values)


def _amount(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


def _quantity(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _date(value: date) -> str:
    return value.strftime("%Y%m%d")
