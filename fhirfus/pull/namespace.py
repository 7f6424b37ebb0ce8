"""Where a site's resources live at the hub: ids prefixed with the site label, references rewritten.

Two sites both have ``Patient/1``; at the hub they must stay two patients. Every pulled id becomes
``{site}-{id}`` (always, not only on a collision: an id must not change meaning when a second
site happens to use it later), and every reference to the source server — relative
(``Patient/1``, ``Patient/1/_history/3``) or absolute under the source's base URL — is rewritten
to ``Type/{site}-{id}`` (without the version: the hub's version numbers are its own). References
elsewhere (another server, ``urn:uuid:``, ``#contained``) stay as they are. A conditional reference
(``Patient?identifier=…``), a rooted one (``/Patient/1``) or an absolute one under the hub's own
base URL (``FHIRFUS_BASE_URL``) fails the load: at the hub the first would be resolved against every
site's data (naming, and revealing the existence of, another site's patient), and the other two would
name a hub id outside the site's namespace (search treats the hub's own absolute URLs as local). An id that would
exceed FHIR's 64 characters is ``{site}-`` and a hash of the original id. Site labels from the
source are replaced by the hub's label for it, so what a site calls itself never decides where
its data belongs at the hub. Should two labels still meet (site ``A`` with id ``B-1`` and site
``A-B`` with id ``1``), the store refuses to move an id to another site and the pull fails: it
never overwrites another site's resource.
"""

from __future__ import annotations

import hashlib

from fhirfus.db.visibility import SITE_SYSTEM, with_site_label
from fhirfus.errors import InvalidRequest
from fhirfus.fhir.references import reference_target, rewrite_references

MAX_ID = 64


def hub_id(site: str, source_id: str) -> str:
    """The hub's id of the site's ``source_id``."""
    local = f"{site}-{source_id}"
    if len(local) <= MAX_ID:
        return local
    return f"{site}-{hashlib.sha256(source_id.encode()).hexdigest()[: MAX_ID - len(site) - 1]}"


def hub_reference(site: str, source_base: str, reference: str, hub_base: str = "") -> str | None:
    """The hub's form of a reference to the source (None: not the source's, left unchanged).
    ``hub_base``: the hub's own base URL, when configured (a reference under it is refused)."""
    if reference.startswith(("#", "urn:")):
        return None
    text = reference
    if "://" in text:
        prefix = source_base.rstrip("/") + "/"
        if not text.startswith(prefix):
            if hub_base and text.startswith(hub_base.rstrip("/") + "/"):
                raise InvalidRequest(f"Reference '{reference}' points into the hub itself, outside the site's "
                                     "namespace: a site's data may name the site's own server, not the hub",
                                     "reference")
            return None
        text = text[len(prefix):]
    if "?" in text or text.startswith("/"):
        raise InvalidRequest(f"Reference '{reference}' is not one the hub can keep in the site's namespace: a "
                             "conditional reference would be resolved against every site's data at the hub, and "
                             "'/Type/id' would name the hub's own resources", "reference")
    parts = text.split("/")
    if len(parts) not in (2, 4) or (len(parts) == 4 and parts[2] != "_history"):
        return None
    res_type, res_id = reference_target(f"{parts[0]}/{parts[1]}")
    if res_type is None or res_id is None:
        return None
    return f"{res_type}/{hub_id(site, res_id)}"


def to_hub(resource: dict, site: str, source_base: str, hub_base: str = "") -> dict:
    """The resource as the hub stores it (``resource``, freshly parsed, is changed in place)."""
    meta = dict(resource.get("meta") or {})
    for name in ("versionId", "lastUpdated"):
        meta.pop(name, None)
    security = [label for label in meta.get("security") or []
                if not (isinstance(label, dict) and label.get("system") == SITE_SYSTEM)]
    if security:
        meta["security"] = security
    else:
        meta.pop("security", None)
    resource["id"] = hub_id(site, str(resource.get("id", "")))
    resource["meta"] = meta
    if not meta:
        del resource["meta"]
    rewrite_references(resource, lambda reference: hub_reference(site, source_base, reference, hub_base))
    return with_site_label(resource, site)
