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


@cache
def _item_range(link_id: str) -> tuple[float | None, float | None]:
    """Answer range of a TWSTRS item, from the Questionnaire (data), not from the mapping."""
    rules = twstrs.versions()[twstrs.DEFAULT_VERSION]
    item = rules.definition.items.get(link_id)
    if item is None:
        raise KeyError(f"unknown TWSTRS linkId '{link_id}'")
    return (float(item.minimum) if item.minimum is not None else None,
            float(item.maximum) if item.maximum is not None else None)


def _number(text: str, kind: str) -> int | float:
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


def _date(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
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


def _one(spec: ColumnSpec, text: str) -> Any:
    value: Any
    if spec.type in ("integer", "decimal"):
        value = _number(text, spec.type)
        _range(spec, value)
    elif spec.type == "date":
        value = _date(text)
    else:
        value = text
    if spec.values is not None:
        if str(value) not in spec.values:
            raise CellError(f"unknown value '{text}'; expected one of {', '.join(spec.values)}")
        value = spec.values[str(value)]
    return value


def read_cell(spec: ColumnSpec, text: str | None) -> Any:
    """The typed value of a cell (a list for split columns; None when empty)."""
    text = (text or "").strip()
    if not text:
        if spec.required:
            raise CellError("required value missing")
        return None
    if spec.split:
        return [_one(spec, part.strip()) for part in text.split(spec.split) if part.strip()]
    return _one(spec, text)


def derive(spec: ColumnSpec, row: dict[str, str]) -> str | None:
    """Text of a derived column (e.g. the session number inside a REDCap event name)."""
    assert spec.derive is not None
    match = re.search(spec.derive["pattern"], row.get(spec.derive["from"], "") or "")
    return match.group(1) if match else None
