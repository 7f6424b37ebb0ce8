"""Who is calling, and what they may do: the caller of every interaction, passed in explicitly.

The API builds an ``Access`` per request (from the bearer token, or ``DEVELOPMENT`` when
authentication is off) and hands it to the operations, which check scopes with ``require`` (403)
and read the store through ``visibility`` (a site client's rows only). Work the server does on
its own account — the CLI, imports, export jobs — runs as ``SERVER``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Connection

from fhirfus.auth.scopes import Grant
from fhirfus.db.visibility import EVERYTHING, NOWHERE, PUBLISHED, Visibility, site_label, with_site_label
from fhirfus.errors import Forbidden

ROLES = ("site", "analyst", "admin")
_VERBS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


class WriteAudit(Protocol):
    """Records a write in the transaction that makes it (``fhirfus.auth.audit.RequestAudit``)."""

    def record_in(self, conn: Connection, method: str | None = None, path: str | None = None) -> None: ...


@dataclass(frozen=True)
class Access:
    client_id: str
    role: str
    site: str | None
    grants: tuple[Grant, ...]
    #: Set per request when authentication is on: every committed write carries its AuditEvent.
    audit: WriteAudit | None = None
    #: Set by a site client's bulk import only: it writes under ids derived from the site and the
    #: file's ids (``fhirfus.bulk.imports.load``), which no other site uses, so it may create them.
    derived_ids: bool = False

    def allows(self, res_type: str, permission: str) -> bool:
        if self.role == "analyst":
            return False  # analysts reach de-identified exports only, never resources
        if res_type == "AuditEvent" and (self.role != "admin" or (permission != "r" and permission != "s")):
            return False  # the audit trail is read by admins and written by the server only
        return any(g.allows(res_type, permission) for g in self.grants)

    def require(self, res_type: str, permission: str) -> None:
        """403 unless the scopes cover ``permission`` (one of c r u d s) on ``res_type``."""
        if not self.allows(res_type, permission):
            raise Forbidden(f"Client '{self.client_id}' ({self.role}) may not {_VERBS[permission]} {res_type}", res_type)

    def require_role(self, *roles: str) -> None:
        if self.role not in roles:
            raise Forbidden(f"Client '{self.client_id}' ({self.role}) may not do this (needs {' or '.join(roles)})")

    def may_read(self, res_type: str) -> bool:
        """Whether included resources of ``res_type`` may be shown (they are left out otherwise)."""
        return self.allows(res_type, "r") or self.allows(res_type, "s")

    @property
    def visibility(self) -> Visibility:
        """The stored rows this caller may see: its site's for a site client (none if it names no
        site: confinement fails closed), all for the others."""
        if self.role == "site":
            return Visibility(self.site) if self.site else NOWHERE
        return EVERYTHING

    @property
    def chooses_ids(self) -> bool:
        """Whether a PUT to an unused id creates it (update-as-create). Not for site clients: an id
        another site uses would have to be refused, which would tell that it exists."""
        return self.role != "site" or self.derived_ids

    def labelled(self, resource: dict) -> dict:
        """A site client's write carries its site's label (403 when it names another site); others
        write the label they send (one site at most, 400 otherwise)."""
        named = site_label(resource)
        if named == PUBLISHED:
            raise Forbidden(f"Only the server publishes (site label {PUBLISHED!r})",
                            f"{resource.get('resourceType', 'Resource')}.meta.security")
        if self.role != "site":
            return resource
        if not self.site or named not in (None, self.site):
            raise Forbidden(f"A client of site {self.site} may not label data for site {named}",
                            f"{resource.get('resourceType', 'Resource')}.meta.security")
        return with_site_label(resource, self.site)


def unrestricted(client_id: str) -> Access:
    return Access(client_id, "admin", None, (Grant("*", "cruds"),))


#: The caller of every request when authentication is off (``make run``, most tests).
DEVELOPMENT = unrestricted("anonymous")
#: The server acting on its own account: the CLI, site imports, export jobs, the demo cohort.
SERVER = unrestricted("fhirfus")
