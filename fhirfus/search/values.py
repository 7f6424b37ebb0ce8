"""Search values: prefixes, tokens, numbers with implicit precision, quantities, date ranges."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from fhirfus.errors import InvalidRequest
from fhirfus.fhir.dates import fhir_search_date

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")

#: Numbers beyond this decimal exponent are refused: SQLite stores REAL (up to about 1e308) and
#: PostgreSQL rejects such NUMERIC literals, so they could only fail later, as a 500.
MAX_EXPONENT = 300

#: Marks "no constraint" (``system|`` matches any code, ``code`` alone matches any system).
ANY = object()


def split_prefix(raw: str) -> tuple[str, str]:
    if len(raw) > 2 and raw[:2] in PREFIXES and (raw[2].isdigit() or raw[2] in "-+."):
        return raw[:2], raw[2:]
    return "eq", raw


@dataclass(frozen=True)
class TokenQuery:
    system: object  # str, None (explicitly no system) or ANY
    code: object    # str or ANY


def parse_token(raw: str) -> TokenQuery:
    """``system|code``, ``code``, ``|code`` (no system), ``system|`` (any code)."""
    if "|" not in raw:
        return TokenQuery(ANY, raw)
    system, _, code = raw.partition("|")
    return TokenQuery(system if system else None, code if code else ANY)


@dataclass(frozen=True)
class NumberQuery:
    prefix: str
    value: Decimal
    low: Decimal
    high: Decimal


def parse_number(raw: str, name: str) -> NumberQuery:
    """A number with its implicit range: ``100`` means [99.5, 100.5)."""
    prefix, text = split_prefix(raw)
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise InvalidRequest(f"'{raw}' is not a valid number for '{name}'", name) from exc
    if not value.is_finite():
        raise InvalidRequest(f"'{raw}' is not a valid number for '{name}'", name)
    if value and abs(value.adjusted()) > MAX_EXPONENT:
        raise InvalidRequest(f"'{raw}' is outside the supported range (1e-{MAX_EXPONENT} to 1e{MAX_EXPONENT}) for '{name}'", name)
    exponent = value.as_tuple().exponent
    half = Decimal(5).scaleb(int(exponent) - 1) if isinstance(exponent, int) else Decimal(0)
    return NumberQuery(prefix, value, value - half, value + half)


@dataclass(frozen=True)
class QuantityQuery:
    number: NumberQuery
    system: str | None
    code: str | None


def parse_quantity(raw: str, name: str) -> QuantityQuery:
    """``[prefix]value|system|code`` (system and code optional; ``value||code`` matches unit codes)."""
    parts = raw.split("|")
    if len(parts) not in (1, 3):
        raise InvalidRequest(f"'{raw}' is not a valid quantity for '{name}' (value|system|code)", name)
    number = parse_number(parts[0], name)
    if len(parts) == 1:
        return QuantityQuery(number, None, None)
    return QuantityQuery(number, parts[1] or None, parts[2] or None)


@dataclass(frozen=True)
class DateQuery:
    prefix: str
    low: datetime
    high: datetime  # exclusive


def parse_date(raw: str, name: str) -> DateQuery:
    try:
        parsed = fhir_search_date(raw)
    except ValueError as exc:
        raise InvalidRequest(f"'{raw}' is not a valid date for '{name}': {exc}", name) from exc
    return DateQuery(parsed.prefix, parsed.low, parsed.high)
