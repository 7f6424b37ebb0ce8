"""How large a search may be, checked on its parameters before anything is compiled to SQL.

Without these one short URL could tie up the database: ``name=x`` repeated 500 times is 500
joins that hold a connection until the statement timeout, a chain ten links deep is ten nested
lookups, and a 60 kB value reaches the index as a 60 kB pattern. Each refusal is a 400 whose
diagnostics name the limit; every search goes through ``check_parameters`` (type, system,
Bundle entries, conditional criteria, ``_typeFilter``), so the limits hold everywhere.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from fhirfus.errors import InvalidRequest

#: Characters of one parameter name, and of one value (each of an OR-list separately).
MAX_VALUE_LENGTH = 1024
#: ``name=value`` pairs of one search, result parameters (``_include``, ``_sort`` …) included.
MAX_PARAMETERS = 50
#: Times one parameter name may be given (each repeat is one more AND-ed lookup).
MAX_REPEATS = 10
#: Comma-separated (OR-ed) values of one parameter.
MAX_OR_VALUES = 100
#: Links of a chain or reverse chain: ``subject:Patient.organization.name`` has 2, each
#: ``_has:`` level counts one.
MAX_CHAIN_DEPTH = 4

#: The limits as the README documents them (``tests/api/test_bad_input.py`` keeps the two equal).
LIMITS = (
    ("characters of a parameter name or of one value", MAX_VALUE_LENGTH),
    ("parameters of one search", MAX_PARAMETERS),
    ("repeats of one parameter", MAX_REPEATS),
    ("comma-separated values of one parameter (`_sort` keys too)", MAX_OR_VALUES),
    ("links of a chain or `_has`", MAX_CHAIN_DEPTH),
)

#: Parameters outside the search itself (the HTTP layer's).
_NOT_COUNTED = frozenset({"_format", "_pretty"})


def check_parameters(params: Sequence[tuple[str, str]]) -> None:
    """400 when the search breaks a limit on its size; cheap (one pass over the text), so it runs first."""
    counted = [(name, value) for name, value in params if name not in _NOT_COUNTED]
    repeated = [(name, times) for name, times in Counter(name for name, _ in counted).items() if times > MAX_REPEATS]
    if repeated:
        name, times = repeated[0]
        raise InvalidRequest(f"'{_cut(name)}' is repeated {times} times; the limit is {MAX_REPEATS} repeats of one "
                             "parameter", _cut(name))
    if len(counted) > MAX_PARAMETERS:
        raise InvalidRequest(f"The search has {len(counted)} parameters; the limit is {MAX_PARAMETERS} parameters "
                             "per search", "search")
    for name, value in counted:
        _check_length(name, name, "parameter name")
        depth = name.count(".") + name.count("_has:")
        if depth > MAX_CHAIN_DEPTH:
            raise InvalidRequest(f"'{_cut(name)}' is a chain of {depth} links; the limit is {MAX_CHAIN_DEPTH} links "
                                 "per chain", _cut(name))
        if "," not in value or len(value) > MAX_OR_VALUES * (MAX_VALUE_LENGTH + 1):
            _check_length(name, value, "value")  # an OR-list is checked value by value once split


def check_or_values(name: str, values: Sequence[str]) -> None:
    """400 for an OR-list beyond ``MAX_OR_VALUES`` values or with a value beyond ``MAX_VALUE_LENGTH``."""
    if len(values) > MAX_OR_VALUES:
        raise InvalidRequest(f"'{_cut(name)}' has {len(values)} comma-separated values; the limit is "
                             f"{MAX_OR_VALUES} values per parameter", _cut(name))
    for value in values:
        _check_length(name, value, "value")


def _check_length(name: str, text: str, what: str) -> None:
    if len(text) > MAX_VALUE_LENGTH:
        raise InvalidRequest(f"A {what} of '{_cut(name)}' has {len(text)} characters; the limit is "
                             f"{MAX_VALUE_LENGTH} characters", _cut(name))


def _cut(name: str) -> str:
    return name if len(name) <= 80 else name[:80] + "…"
