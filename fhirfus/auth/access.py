"""Who is calling, and what they may do: set per request by the API, checked by the operations.

``current()`` is None when authentication is off (development): everything is allowed. The
request's ``Access`` travels in a context variable, so it reaches code running in the thread pool
and inside Bundle processing without being threaded through every signature.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from fhirfus.auth.scopes import Grant
from fhirfus.fhir.errors import Forbidden

ROLES = ("site", "analyst", "admin")
_current: ContextVar[Access | None] = ContextVar("fhirfus_access", default=None)


@dataclass(frozen=True)
class Access:
    client_id: str
    role: str
    site: str | None
    grants: tuple[Grant, ...]

    def allows(self, res_type: str, permission: str) -> bool:
        if self.role == "analyst":
            return False  # analysts reach de-identified exports only, never resources
        if res_type == "AuditEvent" and (self.role != "admin" or permission != "r" and permission != "s"):
            return False  # the audit trail is read by admins and written by the server only
        return any(g.allows(res_type, permission) for g in self.grants)


def current() -> Access | None:
    return _current.get()


@contextmanager
def acting_as(access: Access | None) -> Iterator[None]:
    token = _current.set(access)
    try:
        yield
    finally:
        _current.reset(token)


def require(res_type: str, permission: str) -> None:
    """403 unless the caller's scopes cover ``permission`` (one of c r u d s) on ``res_type``."""
    access = current()
    if access is not None and not access.allows(res_type, permission):
        verb = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}[permission]
        raise Forbidden(f"Client '{access.client_id}' ({access.role}) may not {verb} {res_type}", res_type)


def require_role(*roles: str) -> None:
    access = current()
    if access is not None and access.role not in roles:
        raise Forbidden(f"Client '{access.client_id}' ({access.role}) may not do this (needs {' or '.join(roles)})")


def site() -> str | None:
    """The site whose data the caller is confined to (None: all data)."""
    access = current()
    return access.site if access is not None and access.role == "site" else None


def may_read(res_type: str) -> bool:
    """Whether included resources of ``res_type`` may be shown (they are left out otherwise)."""
    access = current()
    return access is None or access.allows(res_type, "r") or access.allows(res_type, "s")
