"""Whole-number parameters of operations and searches, read one way everywhere.

A parameter is FHIR's ``integer``: a 32-bit value. Without the upper bound a number such as
``count=99999999999999999999`` travels on until a database driver or the JSON encoder cannot hold
it (a 500); with it, the caller hears which parameter is out of range.
"""

from __future__ import annotations

import re

from fhirfus.errors import InvalidRequest
from fhirfus.fhir.representation import INT32

_DIGITS = re.compile(r"-?[0-9]{1,11}")


def whole_number(value: object, name: str, *, minimum: int = 0) -> int:
    """``value`` (query text or a Parameters value) as an int in ``minimum``..2^31-1, else a 400 naming ``name``."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        number = int(value)
    if number is None:
        raise InvalidRequest(f"Parameter '{name}' must be a whole number, not {str(value)[:100]!r}", name)
    if not minimum <= number <= INT32[1]:
        raise InvalidRequest(f"Parameter '{name}' must be a whole number from {minimum} to {INT32[1]}, not {number}",
                             name)
    return number
