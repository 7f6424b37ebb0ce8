"""SMART scopes, v1 (``system/Observation.read``) and v2 (``system/Observation.rs``), as permissions.

A permission is one letter of SMART v2 — c(reate) r(ead) u(pdate) d(elete) s(earch) — on a resource
type or ``*``. Only the ``system/`` context exists for backend services; ``patient/`` and ``user/``
scopes are refused because there is no launch context to bind them to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fhirfus.errors import InvalidRequest

_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(r"^system/(?P<type>\*|[A-Z][A-Za-z]+)\.(?P<perms>\*|read|write|c?r?u?d?s?)$")


@dataclass(frozen=True)
class Grant:
    res_type: str        # a resource type or "*"
    permissions: str     # subset of "cruds"

    def allows(self, res_type: str, permission: str) -> bool:
        return self.res_type in ("*", res_type) and permission in self.permissions


def parse_scope(scope: str) -> Grant:
    match = _SCOPE.match(scope.split("?")[0])
    if not match or not match.group("perms"):
        raise InvalidRequest(f"Unsupported scope '{scope}' (use system/Type.rs or system/*.read style)", "scope")
    perms = match.group("perms")
    return Grant(match.group("type"), _V1.get(perms, perms))


def parse_scopes(text: str) -> tuple[Grant, ...]:
    return tuple(parse_scope(s) for s in text.split() if s)


def _covered(grant: Grant, allowed: tuple[Grant, ...]) -> bool:
    return all(
        any(p in a.permissions and a.res_type in ("*", grant.res_type) for a in allowed) for p in grant.permissions
    )


def narrow(requested: str, registered: str) -> str:
    """The requested scopes a client may have: each must be covered by its registered scopes."""
    allowed = parse_scopes(registered)
    return " ".join(s for s in requested.split() if _covered(parse_scope(s), allowed))
