"""Binary's ``securityContext``: reading a Binary is reading the resource it names.

R4 (binary.html#security): access to a Binary with a ``securityContext`` follows the access to
that resource. So a caller without the read permission on the named type gets the 403 that reading
it would give, and a caller who cannot see the named resource (another site's, or one never
written) gets the 404 of a Binary id never used: the answer tells nothing about the other resource.
The Binary's own site still confines it first, like any resource.
"""

from __future__ import annotations

from sqlalchemy import Connection

from fhirfus.auth.access import Access
from fhirfus.errors import NotFound
from fhirfus.fhir.references import reference_target
from fhirfus.store import repository
from fhirfus.store.repository import Stored


def security_context(content: dict | None) -> str | None:
    """The literal reference of ``Binary.securityContext`` (None when absent or not literal)."""
    context = (content or {}).get("securityContext")
    reference = context.get("reference") if isinstance(context, dict) else None
    return reference if isinstance(reference, str) else None


def require_readable(conn: Connection, caller: Access, stored: Stored) -> None:
    """Refuse to show ``stored`` (a Binary version) unless the caller may read its securityContext.

    Relative references (``Patient/1``) are checked; absolute and ``urn:`` ones name nothing the
    server can look up, and leave the Binary to its own site's confinement."""
    reference = security_context(stored.content)
    if reference is None or "://" in reference:
        return
    res_type, res_id = reference_target(reference)
    if res_type is None or res_id is None:
        return
    caller.require(res_type, "r")
    if repository.current(conn, caller.visibility, res_type, res_id) is None:
        raise NotFound(f"Binary/{stored.res_id} not found", "Binary.id")
