"""The syntax of a literal reference: which type and id a reference string names, before anyone
asks whether that type exists (``references.reference_target``) or is allowed (``bindings``)."""

from __future__ import annotations

import re
from collections.abc import Container
from typing import Final

#: The R4 id rule (``id`` and ``versionId``).
_ID: Final = r"[A-Za-z0-9\-.]{1,64}"
_LITERAL: Final = re.compile(rf"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>{_ID})(?:/_history/{_ID})?$")
#: A relative literal reference, whatever its id: ``Type/id`` or ``Type/id/_history/version``.
_RELATIVE: Final = re.compile(r"(?P<type>[A-Z][A-Za-z]+)/(?P<id>[^/?#]*)(?:/_history/(?P<version>[^/?#]*))?")
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


def relative_fault(reference: str, types: Container[str]) -> str | None:
    """Why a relative literal reference names no resource any server could hold: a type that is none
    of ``types``, or an id or version id outside the R4 id rule (so ``Patient/<65 characters>`` is
    refused where it is written, not stored as a reference that no search or check can follow).
    None when it is fine or not of that shape (absolute, ``urn:``, ``#contained``, conditional)."""
    match = _RELATIVE.fullmatch(reference)
    if match is None:
        return None
    if match["type"] not in types:
        return f"{reference[:80]!r} names no resource type ({match['type'][:70]!r} is none)"
    if not re.fullmatch(_ID, match["id"]) or (match["version"] is not None and not re.fullmatch(_ID, match["version"])):
        return (f"{reference[:80]!r} names no {match['type']}: an id is 1-64 characters of A-Z, a-z, 0-9, "
                "'-' and '.'")
    return None
