"""References inside document and message Bundles resolve to one entry (R4 bundle.html#references).

A relative reference in an entry whose ``fullUrl`` is a RESTful URL resolves against that URL's
base; an absolute one (or ``urn:``) is itself the target. The entries whose ``fullUrl`` is the
target are its matches; a versioned reference (``…/_history/2``) matches the entry of that
``meta.versionId``. More than one match is an error, and so is a versioned reference whose
resource is in the Bundle in other versions only. A target not in the Bundle at all is not judged
here (documents may refer outside themselves).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fhirfus.errors import Issue
from fhirfus.fhir.references import references_at

_RESTFUL = re.compile(r"^(?P<base>.*/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(/_history/[^/]+)?$")
_VERSIONED = re.compile(r"^(?P<url>.+)/_history/(?P<version>[^/]+)$")
KINDS = ("document", "message")


def bundle_reference_issues(bundle: Mapping[str, Any]) -> list[Issue]:
    if bundle.get("type") not in KINDS or not isinstance(bundle.get("entry"), list):
        return []
    entries = [e for e in bundle["entry"] if isinstance(e, Mapping)]
    by_url: dict[str, list[Mapping[str, Any]]] = {}
    for entry in entries:
        if isinstance(entry.get("fullUrl"), str) and isinstance(entry.get("resource"), Mapping):
            by_url.setdefault(entry["fullUrl"], []).append(entry["resource"])
    issues: list[Issue] = []
    for index, entry in enumerate(bundle["entry"]):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("resource"), Mapping):
            continue
        base = _base(entry.get("fullUrl"))
        where = f"Bundle.entry[{index}].resource"
        for path, reference in references_at(entry["resource"], where, nested_resources=False):
            issue = _resolve(reference, base, by_url, f"{path}.reference")
            if issue is not None:
                issues.append(issue)
    return issues


def _base(full_url: Any) -> str | None:
    match = _RESTFUL.match(full_url) if isinstance(full_url, str) else None
    return match["base"] if match and match["base"] and "://" in match["base"] else None


def _resolve(reference: str, base: str | None, by_url: Mapping[str, list[Mapping[str, Any]]],
             path: str) -> Issue | None:
    if reference.startswith("#"):
        return None
    if "://" in reference or reference.startswith("urn:"):
        target = reference
    elif base is not None and _RESTFUL.match(reference):
        target = base + reference
    else:
        return None
    versioned = _VERSIONED.match(target)
    if versioned is None:
        matches = by_url.get(target, [])
    else:
        exact = by_url.get(target, [])
        same = by_url.get(versioned["url"], [])
        matches = exact + [r for r in same if (r.get("meta") or {}).get("versionId") == versioned["version"]]
        if not matches and same:
            return Issue(f"{reference} is not in the Bundle: the Bundle holds {versioned['url']} in other versions only",
                         "not-found", "error", (path,))
    if len(matches) > 1:
        return Issue(f"{reference} matches {len(matches)} entries of the Bundle; it must name one", "invalid",
                     "error", (path,))
    return None
