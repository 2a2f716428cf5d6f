"""Value types and normalizers: the small pure functions a compiled field is made of.

A type converter takes a raw value (text from HL7, or a JSON value from FHIR) and returns the
typed value or raises ValueError; the compiler turns that error into a hold finding.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["NORMALIZERS", "TYPES", "Converter", "make_normalizer", "to_target"]

Converter = Callable[[Any], Any]
_CENT = Decimal("0.01")


def _string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | dict | list):
        raise ValueError(f"expected text, got {type(value).__name__}")
    return str(value)


def _code(value: Any) -> str:
    return _string(value).strip().upper()


def _hl7_datetime(text: str) -> datetime:
    """HL7 DTM `YYYYMMDD[HHMM[SS[.S+]]][+/-ZZZZ]`; the time zone is kept when given."""
    offset = None
    for sign in ("+", "-"):
        pos = text.find(sign, 8)
        if pos > 0:
            zone = text[pos + 1:]
            if len(zone) != 4 or not zone.isdigit():
                raise ValueError("bad time zone")
            minutes = int(zone[:2]) * 60 + int(zone[2:])
            offset = timezone(timedelta(minutes=minutes if sign == "+" else -minutes))
            text = text[:pos]
            break
    main = text.split(".", 1)[0]
    if len(main) < 8 or len(main) % 2 or not main.isdigit():
        raise ValueError("not an HL7 date/time")
    parts = [int(main[0:4]), int(main[4:6]), int(main[6:8])]
    parts += [int(main[i:i + 2]) for i in range(8, min(len(main), 14), 2)]
    while len(parts) < 6:
        parts.append(0)
    year, month, day, hour, minute, second = parts[:6]
    return datetime(year, month, day, hour, minute, second, tzinfo=offset)


def _datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    text = _string(value).strip()
    if len(text) >= 10 and text[4] == "-":
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    return _hl7_datetime(text)


def _date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = _string(value).strip()
    if len(text) >= 10 and text[4] == "-":
        # ISO date or FHIR dateTime: the calendar date as written, zone ignored.
        return date.fromisoformat(text[:10])
    if len(text) == 8 and text.isdigit():
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    return _hl7_datetime(text).date()


def _decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    elif isinstance(value, int | float):
        result = Decimal(str(value))
    else:
        text = _string(value).strip().replace(",", "")
        try:
            result = Decimal(text)
        except InvalidOperation:
            raise ValueError("not a number") from None
    if not result.is_finite():
        raise ValueError("not a finite number")
    return result


def _money(value: Any) -> Decimal:
    text = value.strip().lstrip("$") if isinstance(value, str) else value
    try:
        return _decimal(text).quantize(_CENT)
    except InvalidOperation:  # more digits than a decimal context holds
        raise ValueError("too large an amount") from None


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a whole number, got a boolean")
    if isinstance(value, int):
        return value
    number = _decimal(value)
    if number != number.to_integral_value():
        raise ValueError("not a whole number")
    return int(number)


TYPES: dict[str, Converter] = {
    "string": _string,
    "code": _code,
    "date": _date,
    "datetime": _datetime,
    "decimal": _decimal,
    "money": _money,
    "integer": _integer,
}

_TYPE_WORDS = {
    "string": "text", "code": "code", "date": "date", "datetime": "date/time",
    "decimal": "number", "money": "money amount", "integer": "whole number",
}


def type_word(type_name: str) -> str:
    """A biller-readable name for a type ("date", "money amount")."""
    return _TYPE_WORDS.get(type_name, type_name)


def to_target(value: Any, target_type: str) -> Any:
    """Coerce an already typed value to the Charge field's own type (datetime -> date ...)."""
    if value is None:
        return None
    if target_type == "date":
        return _date(value)
    if target_type == "money":
        return _money(value)
    if target_type == "decimal":
        return _decimal(value)
    if target_type == "integer":
        return _integer(value)
    return _string(value)


# -- normalizers: text in, text out (split: text in, list out) -------------------------

def _strip_leading_zeros(text: str) -> str:
    stripped = text.lstrip("0")
    return stripped if stripped or not text else "0"


NORMALIZERS: dict[str, Callable[[str], str]] = {
    "trim": str.strip,
    "upper": str.upper,
    "lower": str.lower,
    "strip_leading_zeros": _strip_leading_zeros,
}
PARAMETRIC = ("pad", "split")


def make_normalizer(name: str, arg: Any) -> Callable[[str], Any]:
    """Build a parametric normalizer; raise ValueError with a hint when `arg` is wrong."""
    if name == "pad":
        if isinstance(arg, int) and not isinstance(arg, bool):
            width, fill, side = arg, "0", "left"
        elif isinstance(arg, dict):
            unknown = set(arg) - {"width", "fill", "side"}
            if unknown:
                raise ValueError(f"pad: unknown option {sorted(unknown)[0]!r} "
                                 "(options: width, fill, side)")
            width = arg.get("width", 0)
            fill = str(arg.get("fill", "0"))
            side = arg.get("side", "left")
            if not isinstance(width, int) or isinstance(width, bool):
                raise ValueError("pad: width must be a whole number, e.g. {pad: {width: 5}}")
        else:
            raise ValueError("pad needs a width: {pad: 5} or {pad: {width: 5, fill: '0'}}")
        if len(fill) != 1:
            raise ValueError("pad: fill must be one character")
        if side not in ("left", "right"):
            raise ValueError("pad: side must be left or right")
        if side == "left":
            return lambda text: text.rjust(width, fill)
        return lambda text: text.ljust(width, fill)
    if name == "split":
        if not isinstance(arg, str) or not arg:
            raise ValueError("split needs a separator, e.g. {split: ' '}")
        sep = arg
        return lambda text: [part.strip() for part in text.split(sep) if part.strip()]
    raise ValueError(f"unknown normalizer {name!r}")
