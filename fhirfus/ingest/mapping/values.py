"""Reading one cell: text → typed, mapped, range-checked value, or a precise reason why not."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

from fhirfus.domain import twstrs
from fhirfus.ingest.mapping.spec import ColumnSpec


@dataclass(frozen=True)
class CellError(Exception):
    reason: str


@dataclass(frozen=True)
class Locale:
    """How a site writes dates and numbers. ISO (the default) reads ``2022-03-15`` and ``0.38``;
    ``de`` also reads day-first dates (``15.03.2022``) and decimal commas (``0,38``, ``1.500,5``)."""

    name: str
    day_first: bool = False
    decimal_comma: bool = False


LOCALES = {"iso": Locale("iso"), "de": Locale("de", day_first=True, decimal_comma=True)}
ISO = LOCALES["iso"]
_DAY_FIRST = re.compile(r"(\d{1,2})[./](\d{1,2})[./](\d{4})")
_GROUPED = re.compile(r"[+-]?\d{1,3}(\.\d{3})+(,\d+)?")


def locale(name: str | None) -> Locale:
    if not name:
        return ISO
    if name not in LOCALES:
        raise CellError(f"unknown locale '{name}'; known: {', '.join(LOCALES)}")
    return LOCALES[name]


@cache
def _item_range(link_id: str) -> tuple[float | None, float | None]:
    """Answer range of a TWSTRS item, from the Questionnaire (data), not from the mapping."""
    rules = twstrs.versions()[twstrs.DEFAULT_VERSION]
    item = rules.definition.items.get(link_id)
    if item is None:
        raise KeyError(f"unknown TWSTRS linkId '{link_id}'")
    return (float(item.minimum) if item.minimum is not None else None,
            float(item.maximum) if item.maximum is not None else None)


def _number(text: str, kind: str, where: Locale = ISO) -> int | float:
    if where.decimal_comma:
        text = text.replace(".", "") if _GROUPED.fullmatch(text) else text
        text = text.replace(",", ".")
    elif re.fullmatch(r"[+-]?\d+,\d+", text):
        raise CellError(f"'{text}' is not a number (a decimal comma? import with --locale de)")
    try:
        if kind == "integer":
            if not re.fullmatch(r"[+-]?\d+", text):
                raise ValueError
            return int(text)
        value = Decimal(text)
        if not value.is_finite():
            raise InvalidOperation
        return int(value) if value == value.to_integral_value() and "." not in text else float(value)
    except (ValueError, InvalidOperation):
        raise CellError(f"'{text}' is not {'an integer' if kind == 'integer' else 'a number'}") from None


def _date(text: str, where: Locale = ISO) -> str:
    day_first = _DAY_FIRST.fullmatch(text)
    try:
        if day_first and where.day_first:
            day, month, year = (int(g) for g in day_first.groups())
            return date(year, month, day).isoformat()
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError(text)
        return date.fromisoformat(text).isoformat()
    except ValueError:
        if day_first and not where.day_first:
            raise CellError(f"'{text}' is not a valid date (YYYY-MM-DD; a day-first date? import with --locale de)") from None
        if day_first:
            raise CellError(f"'{text}' is not a valid date (DD.MM.YYYY)") from None
        raise CellError(f"'{text}' is not a valid date (YYYY-MM-DD)") from None



def _range(spec: ColumnSpec, value: float) -> None:
    low, high = spec.minimum, spec.maximum
    if spec.questionnaire_item:
        low, high = _item_range(spec.questionnaire_item)
    if (low is not None and value < low) or (high is not None and value > high):
        raise CellError(f"{value} is out of range [{_plain(low)}, {_plain(high)}]")


def _plain(bound: float | None) -> str:
    if bound is None:
        return "…"
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def label(mapped: Any) -> str:
    """A mapped value in words: a code, a coding's display, or several joined by ' + '."""
    if mapped is None:
        return "none"
    if isinstance(mapped, list):
        return " + ".join(label(m) for m in mapped)
    if isinstance(mapped, dict):
        return str(mapped.get("display") or mapped.get("code") or mapped)
    return str(mapped)


def expected(spec: ColumnSpec) -> str:
    """The allowed values of a coded column in words, e.g. ``1 (female), 2 (male)``; for a split
    column also how to combine them (``PTT+Vo``)."""
    assert spec.values is not None
    words = [key if label(value) == key else f"{key} ({label(value)})" for key, value in spec.values.items()]
    text = ", ".join(words)
    if spec.split and len(spec.values) > 1:
        keys = list(spec.values)
        text += f"; several joined by '{spec.split}', e.g. {spec.split.join(keys[:2])}"
    return text


def _one(spec: ColumnSpec, text: str, where: Locale = ISO) -> Any:
    value: Any
    if spec.type in ("integer", "decimal"):
        value = _number(text, spec.type, where)
        _range(spec, value)
    elif spec.type == "date":
        value = _date(text, where)
    else:
        value = text
    if spec.values is not None:
        if str(value) not in spec.values:
            raise CellError(f"unknown value '{text}'; expected one of {expected(spec)}")
        value = spec.values[str(value)]
    return value


def read_cell(spec: ColumnSpec, text: str | None, where: Locale = ISO) -> Any:
    """The typed value of a cell (a list for split columns; None when empty)."""
    text = (text or "").strip()
    if not text:
        if spec.required:
            raise CellError("required value missing")
        return None
    if spec.split:
        return [_one(spec, part.strip(), where) for part in text.split(spec.split) if part.strip()]
    return _one(spec, text, where)


def derive(spec: ColumnSpec, row: dict[str, str]) -> str | None:
    """Text of a derived column (e.g. the session number inside a REDCap event name)."""
    assert spec.derive is not None
    match = re.search(spec.derive["pattern"], row.get(spec.derive["from"], "") or "")
    return match.group(1) if match else None
