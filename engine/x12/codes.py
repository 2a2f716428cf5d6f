"""Code-set rules the 837P writer applies: NPI check digits, ICD/CPT formats, X12 codes.

Sources are in ../shared/REFERENCE.md: NPI Luhn with the 80840 prefix (CMS), ICD-10-CM
without the decimal in HI, CPT/HCPCS formats for SV101 with qualifier HC.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "clean_text",
    "diagnosis_qualifiers",
    "icd_code_for_hi",
    "npi_is_valid",
    "procedure_code_is_valid",
    "relationship_code",
    "x12_sex",
]

# Characters the writer lets into a data element: the X12 extended character set minus our
# delimiters (* element, : component, ~ segment, ^ repetition) and minus control characters.
_NOT_ALLOWED = re.compile(r"""[^A-Za-z0-9!"&'()+,\-./;?= %@\[\]_{}\\|<>#$]""")
_SPACES = re.compile(r"\s+")

_ICD10 = re.compile(r"^[A-Z][0-9][0-9A-Z][0-9A-Z]{0,4}$")
_ICD9 = re.compile(r"^(V[0-9]{2}|E[0-9]{3}|[0-9]{3})[0-9]{0,2}$")
_PROCEDURE = re.compile(r"^([0-9]{4}[0-9FTU]|[A-V][0-9]{4})$")
_ICD9_SYSTEMS = {"I9", "I9C", "I9CDX", "ICD9", "ICD-9", "ICD-9-CM", "ICD9CM"}


def npi_is_valid(npi: str) -> bool:
    """True for a 10-digit NPI whose check digit is Luhn over 80840 + the first nine."""
    if not re.fullmatch(r"[0-9]{10}", npi):
        return False
    total = 0
    for position, char in enumerate(reversed("80840" + npi[:9])):
        digit = int(char)
        if position % 2 == 0:  # every second digit from the right, starting at the rightmost
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return (10 - total % 10) % 10 == int(npi[9])


def clean_text(value: str, *, upper: bool = True, max_len: int | None = None) -> str:
    """A value safe inside an element: accents folded, delimiters dropped, spaces collapsed."""
    folded = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii")
    text = _SPACES.sub(" ", _NOT_ALLOWED.sub(" ", folded)).strip()
    if upper:
        text = text.upper()
    if max_len is not None:
        text = text[:max_len].rstrip()
    return text


def icd_code_for_hi(code: str, system: str | None) -> str | None:
    """The code as HI carries it (no dot, upper case), or None when its format is wrong."""
    bare = code.replace(".", "").replace(" ", "").upper()
    pattern = _ICD9 if _is_icd9(system) else _ICD10
    return bare if pattern.match(bare) else None


def diagnosis_qualifiers(system: str | None) -> tuple[str, str]:
    """(principal, other) HI qualifiers: ABK/ABF for ICD-10-CM, BK/BF for ICD-9-CM."""
    return ("BK", "BF") if _is_icd9(system) else ("ABK", "ABF")


def _is_icd9(system: str | None) -> bool:
    return (system or "").strip().upper().replace(" ", "") in _ICD9_SYSTEMS


def procedure_code_is_valid(code: str) -> bool:
    """CPT (4 digits + digit/F/T/U) or HCPCS Level II (A-V + 4 digits), as SV101 HC needs."""
    return bool(_PROCEDURE.match(code))


# Subscriber relationship -> X12 individual relationship code (18 self; PAT01 otherwise).
# Accepts X12 codes, HL7 v2 table 0063 and FHIR subscriber-relationship codes. X12 codes
# win on conflict: "01" is spouse here, as in X12 (UB-92 used 01 for self).
_RELATIONSHIPS: dict[str, str] = {
    **{code: code for code in ("18", "01", "19", "20", "21", "39", "40", "53", "G8")},
    "SEL": "18", "SELF": "18",
    "SPO": "01", "SPOUSE": "01",
    "CHD": "19", "CHILD": "19", "NCH": "19", "SCH": "19", "FCH": "19",
    "EME": "20", "EMPLOYEE": "20",
    "UNK": "21", "UNKNOWN": "21",
    "DOM": "53", "COMMON": "53",
    "OTH": "G8", "OTHER": "G8", "PAR": "G8", "PARENT": "G8", "INJURED": "G8",
    "GRD": "G8", "WRD": "G8", "MTH": "G8", "FTH": "G8", "SIB": "G8", "GCH": "G8",
}


def relationship_code(value: str | None) -> str | None:
    """The X12 code for a relationship value; None when it is not a known value."""
    if value is None or not value.strip():
        return None
    return _RELATIONSHIPS.get(value.strip().upper())


def x12_sex(value: str | None) -> str:
    """DMG03: F, M, or U for anything else (HL7 O/A/N/U, FHIR other/unknown, absent)."""
    head = (value or "").strip().upper()[:1]
    return head if head in ("F", "M") else "U"
