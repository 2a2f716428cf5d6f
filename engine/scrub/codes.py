"""Code-set facts the scrubber checks against (see shared REFERENCE.md for sources).

Re-check the lists yearly: CMS adds place-of-service codes and modifiers.
"""

from __future__ import annotations

import functools
import re

__all__ = [
    "CPT",
    "DEFAULT_MODIFIERS",
    "HCPCS_II",
    "ICD10_CM",
    "PLACE_OF_SERVICE",
    "TELEHEALTH_POS",
    "npi_is_valid",
]

# CPT Category I (5 digits), II (4 digits + F), III (+ T), PLA (+ U).
CPT = re.compile(r"^\d{4}[0-9FTU]$")
# HCPCS Level II: a letter A-V and 4 digits.
HCPCS_II = re.compile(r"^[A-V]\d{4}$")
# ICD-10-CM: letter, digit, letter/digit, then up to 4 more; with or without the decimal
# point (837 files omit it, HL7 feeds usually carry it).
ICD10_CM = re.compile(r"^[A-Z][0-9][0-9A-Z](\.?[0-9A-Z]{1,4})?$")

# CMS Place of Service code set (cms.gov "Place of Service Code Set").
PLACE_OF_SERVICE: dict[str, str] = {
    "01": "Pharmacy", "02": "Telehealth provided other than in patient's home",
    "03": "School", "04": "Homeless shelter", "05": "Indian Health Service free-standing",
    "06": "Indian Health Service provider-based", "07": "Tribal 638 free-standing",
    "08": "Tribal 638 provider-based", "09": "Prison/correctional facility",
    "10": "Telehealth provided in patient's home", "11": "Office", "12": "Home",
    "13": "Assisted living facility", "14": "Group home", "15": "Mobile unit",
    "16": "Temporary lodging", "17": "Walk-in retail health clinic",
    "18": "Place of employment/worksite", "19": "Off campus-outpatient hospital",
    "20": "Urgent care facility", "21": "Inpatient hospital",
    "22": "On campus-outpatient hospital", "23": "Emergency room - hospital",
    "24": "Ambulatory surgical center", "25": "Birthing center",
    "26": "Military treatment facility", "27": "Outreach site/street",
    "31": "Skilled nursing facility", "32": "Nursing facility",
    "33": "Custodial care facility", "34": "Hospice", "41": "Ambulance - land",
    "42": "Ambulance - air or water", "49": "Independent clinic",
    "50": "Federally qualified health center", "51": "Inpatient psychiatric facility",
    "52": "Psychiatric facility-partial hospitalization",
    "53": "Community mental health center",
    "54": "Intermediate care facility/individuals with intellectual disabilities",
    "55": "Residential substance abuse treatment facility",
    "56": "Psychiatric residential treatment center",
    "57": "Non-residential substance abuse treatment facility",
    "58": "Non-residential opioid treatment facility", "60": "Mass immunization center",
    "61": "Comprehensive inpatient rehabilitation facility",
    "62": "Comprehensive outpatient rehabilitation facility",
    "65": "End-stage renal disease treatment facility",
    "66": "Programs of all-inclusive care for the elderly (PACE) center",
    "71": "Public health clinic", "72": "Rural health clinic",
    "81": "Independent laboratory", "99": "Other place of service",
}
TELEHEALTH_POS = ("02", "10")

# Modifiers accepted unless a deployment configures its own list (AMA CPT Appendix A and
# common HCPCS Level II modifiers).
DEFAULT_MODIFIERS = [
    "22", "23", "24", "25", "26", "27", "32", "33", "47", "50", "51", "52", "53", "54", "55",
    "56", "57", "58", "59", "62", "63", "66", "73", "74", "76", "77", "78", "79", "80", "81",
    "82", "90", "91", "92", "93", "95", "96", "97", "99",
    "AI", "AS", "CR", "CS", "E1", "E2", "E3", "E4", "F1", "F2", "F3", "F4", "F5", "F6",
    "F7", "F8", "F9", "FA", "FS", "FT", "FX", "FY", "GA", "GC", "GE", "GT", "GV", "GW",
    "GX", "GY", "GZ", "JW", "JZ", "KX", "LC", "LD", "LM", "LT", "Q5", "Q6", "QW", "RC",
    "RI", "RT", "SA", "TA", "T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T9", "TC",
    "XE", "XP", "XS", "XU",
]


@functools.lru_cache(maxsize=4096)  # a practice bills under a handful of NPIs
def npi_is_valid(npi: str) -> bool:
    """Ten digits whose last is the Luhn check digit of 80840 + the first nine."""
    if len(npi) != 10 or not npi.isdigit():
        return False
    total = 0
    # Luhn from the right over "80840" + 9 digits, doubling every second digit starting
    # with the rightmost of those 14 (the check digit itself is not included).
    for position, char in enumerate(reversed("80840" + npi[:9])):
        digit = int(char)
        if position % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return (10 - total % 10) % 10 == int(npi[9])
