"""HL7 v2 shown segment by segment with field names, for the message detail view.

A small table names the fields of the segments a charge interface sees most (MSH, EVN,
PID, PV1, FT1, DG1, IN1, PR1); other fields are shown by position only. `viewer_safe`
lists the fields a role without PHI permission may see: everything else is masked, so an
unknown or Z-segment never leaks a name or an identifier.
"""

from __future__ import annotations

from typing import Any

FIELD_NAMES: dict[str, dict[int, str]] = {
    "MSH": {1: "Field Separator", 2: "Encoding Characters", 3: "Sending Application",
            4: "Sending Facility", 5: "Receiving Application", 6: "Receiving Facility",
            7: "Date/Time of Message", 8: "Security", 9: "Message Type",
            10: "Message Control ID", 11: "Processing ID", 12: "Version ID",
            13: "Sequence Number", 14: "Continuation Pointer",
            15: "Accept Acknowledgment Type", 16: "Application Acknowledgment Type",
            17: "Country Code", 18: "Character Set"},
    "EVN": {1: "Event Type Code", 2: "Recorded Date/Time", 3: "Date/Time Planned Event",
            4: "Event Reason Code", 5: "Operator ID", 6: "Event Occurred"},
    "PID": {1: "Set ID", 2: "Patient ID", 3: "Patient Identifier List",
            4: "Alternate Patient ID", 5: "Patient Name", 6: "Mother's Maiden Name",
            7: "Date/Time of Birth", 8: "Administrative Sex", 9: "Patient Alias", 10: "Race",
            11: "Patient Address", 12: "County Code", 13: "Phone Number - Home",
            14: "Phone Number - Business", 15: "Primary Language", 16: "Marital Status",
            17: "Religion", 18: "Patient Account Number", 19: "SSN Number",
            20: "Driver's License Number", 22: "Ethnic Group", 29: "Patient Death Date"},
    "PV1": {1: "Set ID", 2: "Patient Class", 3: "Assigned Patient Location",
            4: "Admission Type", 5: "Preadmit Number", 6: "Prior Patient Location",
            7: "Attending Doctor", 8: "Referring Doctor", 9: "Consulting Doctor",
            10: "Hospital Service", 14: "Admit Source", 17: "Admitting Doctor",
            18: "Patient Type", 19: "Visit Number", 20: "Financial Class",
            36: "Discharge Disposition", 39: "Servicing Facility", 44: "Admit Date/Time",
            45: "Discharge Date/Time"},
    "FT1": {1: "Set ID", 2: "Transaction ID", 3: "Transaction Batch ID",
            4: "Transaction Date", 5: "Transaction Posting Date", 6: "Transaction Type",
            7: "Transaction Code", 8: "Transaction Description",
            9: "Transaction Description - Alt", 10: "Transaction Quantity",
            11: "Transaction Amount - Extended", 12: "Transaction Amount - Unit",
            13: "Department Code", 14: "Insurance Plan ID", 15: "Insurance Amount",
            16: "Assigned Patient Location", 17: "Fee Schedule", 18: "Patient Type",
            19: "Diagnosis Code", 20: "Performed By Code", 21: "Ordered By Code",
            22: "Unit Cost", 23: "Filler Order Number", 24: "Entered By Code",
            25: "Procedure Code", 26: "Procedure Code Modifier"},
    "DG1": {1: "Set ID", 2: "Diagnosis Coding Method", 3: "Diagnosis Code",
            4: "Diagnosis Description", 5: "Diagnosis Date/Time", 6: "Diagnosis Type",
            15: "Diagnosis Priority", 16: "Diagnosing Clinician"},
    "IN1": {1: "Set ID", 2: "Insurance Plan ID", 3: "Insurance Company ID",
            4: "Insurance Company Name", 5: "Insurance Company Address",
            6: "Insurance Co Contact Person", 7: "Insurance Co Phone Number",
            8: "Group Number", 9: "Group Name", 10: "Insured's Group Emp ID",
            11: "Insured's Group Emp Name", 12: "Plan Effective Date",
            13: "Plan Expiration Date", 14: "Authorization Information", 15: "Plan Type",
            16: "Name of Insured", 17: "Insured's Relationship to Patient",
            18: "Insured's Date of Birth", 19: "Insured's Address",
            20: "Assignment of Benefits", 21: "Coordination of Benefits",
            22: "Coordination of Benefits Priority", 35: "Company Plan Code",
            36: "Policy Number", 49: "Insured's ID Number"},
    "PR1": {1: "Set ID", 2: "Procedure Coding Method", 3: "Procedure Code",
            4: "Procedure Description", 5: "Procedure Date/Time",
            6: "Procedure Functional Type", 7: "Procedure Minutes", 8: "Anesthesiologist",
            11: "Surgeon", 16: "Procedure Code Modifier"},
}

_ALL = frozenset(range(1, 100))
VIEWER_SAFE: dict[str, frozenset[int]] = {
    "MSH": _ALL, "EVN": _ALL, "FT1": _ALL, "DG1": _ALL, "PR1": _ALL,
    "PID": frozenset({1, 8}),
    "PV1": frozenset({1, 2, 3, 4, 7, 8, 9, 10, 14, 17, 18, 20, 36, 39}),
    "IN1": frozenset({1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 15, 17, 22, 35}),
}
MASK = "•••"


def _split_segments(text: str) -> list[str]:
    return [s for s in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if s.strip()]


def segments(raw: bytes, *, masked: bool) -> list[dict[str, Any]]:
    """Each segment as {name, fields: [{position, name, value}]}, PHI masked when asked.

    MSH is numbered as the standard does: MSH-1 is the field separator itself.
    """
    text = raw.decode("utf-8", "replace")
    separator = text[3] if text.startswith("MSH") and len(text) > 3 else "|"
    out: list[dict[str, Any]] = []
    for line in _split_segments(text):
        parts = line.split(separator)
        name = parts[0][:3]
        values = [separator, *parts[1:]] if name == "MSH" else parts[1:]
        names = FIELD_NAMES.get(name, {})
        safe = VIEWER_SAFE.get(name, frozenset())
        fields = []
        for position, value in enumerate(values, start=1):
            if value == "":
                continue
            shown = MASK if masked and position not in safe else value
            fields.append({"position": position, "name": names.get(position, ""),
                           "value": shown})
        out.append({"name": name, "fields": fields})
    return out


def masked_raw(raw: bytes) -> str:
    """The raw message rebuilt with every field a viewer may not see replaced by MASK."""
    text = raw.decode("utf-8", "replace")
    separator = text[3] if text.startswith("MSH") and len(text) > 3 else "|"
    lines = []
    for seg in segments(raw, masked=True):
        count = max((f["position"] for f in seg["fields"]), default=0)
        values = [""] * count
        for f in seg["fields"]:
            values[f["position"] - 1] = f["value"]
        if seg["name"] == "MSH":
            lines.append("MSH" + separator + separator.join(values[1:]))
        else:
            lines.append(separator.join([seg["name"], *values]))
    return "\r".join(lines)
