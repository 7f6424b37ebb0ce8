"""The syntax of a literal reference: which type and id a reference string names, before anyone
asks whether that type exists (``references.reference_target``) or is allowed (``bindings``)."""

from __future__ import annotations

import re
from typing import Final

_LITERAL: Final = re.compile(
    r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$"
)
_CONDITIONAL: Final = re.compile(r"(?P<type>[A-Z][A-Za-z]+)\?")


def split_literal(reference: str) -> tuple[str, str] | None:
    """(type, id) of ``Type/id``, ``Type/id/_history/v`` or an absolute URL ending so; None for
    ``urn:``, ``#contained`` and anything else."""
    if reference.startswith(("urn:", "#")):
        return None
    match = _LITERAL.search(reference)
    return None if match is None else (match["type"], match["id"])


def named_type(reference: str) -> str | None:
    """The type a reference names: a literal's type, or the type of a conditional reference
    (``Patient?identifier=…``, resolved inside transactions)."""
    literal = split_literal(reference)
    if literal is not None:
        return literal[0]
    match = _CONDITIONAL.match(reference)
    return None if match is None else match["type"]
