"""Binary's ``securityContext``: reading a Binary is reading the resource it names.

R4 (binary.html#security): access to a Binary with a ``securityContext`` follows the access to
that resource. So a caller without the read permission on the named type gets the 403 that reading
it would give, and a caller who cannot see the named resource (another site's, or one never
written) gets the 404 of a Binary id never used: the answer tells nothing about the other resource.
The Binary's own site still confines it first, like any resource.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection

from fhirfus.auth.access import Access
from fhirfus.db.visibility import Visibility
from fhirfus.errors import NotFound
from fhirfus.fhir.references import reference_target
from fhirfus.store import repository
from fhirfus.store.repository import Stored

T = TypeVar("T")


def security_context(content: dict | None) -> str | None:
    """The literal reference of ``Binary.securityContext`` (None when absent or not literal)."""
    context = (content or {}).get("securityContext")
    reference = context.get("reference") if isinstance(context, dict) else None
    return reference if isinstance(reference, str) else None


def _target(content: dict | None) -> tuple[str, str] | None:
    """(type, id) named by the securityContext. Relative references (``Patient/1``) only: absolute
    and ``urn:`` ones name nothing the server can look up, and leave the Binary to its own site's
    confinement."""
    reference = security_context(content)
    if reference is None or "://" in reference:
        return None
    res_type, res_id = reference_target(reference)
    return (res_type, res_id) if res_type and res_id else None


def require_readable(conn: Connection, caller: Access, stored: Stored) -> None:
    """Refuse to show ``stored`` (a Binary version) unless the caller may read its securityContext."""
    target = _target(stored.content)
    if target is None:
        return
    caller.require(target[0], "r")
    if repository.current(conn, caller.visibility, *target) is None:
        raise NotFound(f"Binary/{stored.res_id} not found", "Binary.id")


def may_read(conn: Connection, caller: Access, content: dict | None) -> bool:
    """``require_readable`` as a yes/no, for Binaries among search and history results."""
    target = _target(content)
    return target is None or (caller.allows(target[0], "r") and context_visible(conn, caller.visibility, content))


def context_visible(conn: Connection, seen_by: Visibility, content: dict | None) -> bool:
    """Whether the rows ``seen_by`` holds the securityContext's resource (an export job knows its
    site, not its requester's scopes: it checks this part of ``may_read`` only)."""
    target = _target(content)
    return target is None or repository.current(conn, seen_by, *target) is not None


def readable(conn: Connection, caller: Access, items: list[T], content_of: Callable[[T], dict | None]) -> list[T]:
    """``items`` (search rows, history versions) without the Binaries the caller may not read."""
    return [item for item in items
            if getattr(item, "res_type", None) != "Binary" or may_read(conn, caller, content_of(item))]
