"""The R4 Bundle rules (https://hl7.org/fhir/R4/bundle.html) per Bundle type.

Why: a stored or validated Bundle is read later by someone who trusts its shape: a document whose
first entry is not its Composition, two entries claiming one fullUrl, or a search mode inside a
transaction are ambiguous to every reader. Checked, each issue naming the entry:

- ``fullUrl`` absolute (or ``urn:uuid:`` / ``urn:oid:``), not version specific, and naming the
  entry's resource (type and id) when it is a RESTful URL; unique unless the entries hold
  different versions (bdl-7; a history may repeat them);
- ``link`` with relation ``self`` at most once;
- ``entry.request`` required in batch, transaction and history, forbidden elsewhere;
  ``entry.response`` required in batch-response, transaction-response and history, forbidden
  elsewhere; ``entry.search`` only in a searchset; ``total`` only in a searchset or history;
  every entry carries a resource, a request or a response;
- a document starts with its Composition and has an identifier (system and value) and a
  timestamp; a message starts with its MessageHeader.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fhirfus.errors import Issue

REQUEST_TYPES = frozenset({"batch", "transaction", "history"})
RESPONSE_TYPES = frozenset({"batch-response", "transaction-response", "history"})
TOTAL_TYPES = frozenset({"searchset", "history"})
FIRST_RESOURCE = {"document": "Composition", "message": "MessageHeader"}
_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:\S+\Z")  # any scheme (RFC 3986), as the reference checks
_URN = re.compile(r"urn:(uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
                  r"|oid:[0-2](\.(0|[1-9][0-9]*))+)\Z")
_RESTFUL = re.compile(r"(?:.*/)?([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/[^/]+)?\Z")


def _issue(message: str, expr: str, code: str = "invalid") -> Issue:
    return Issue(message, code, "error", (expr,))


def _full_url_issues(full_url: Any, resource: Any, expr: str) -> list[Issue]:
    if not isinstance(full_url, str):
        return []
    if not _ABSOLUTE.match(full_url) or (full_url.startswith(("urn:uuid:", "urn:oid:")) and not _URN.match(full_url)):
        return [_issue(f"fullUrl '{full_url}' must be an absolute URL, a urn:uuid or a urn:oid", f"{expr}.fullUrl")]
    restful = _RESTFUL.match(full_url) if not full_url.startswith("urn:") else None
    if restful is None:
        return []
    if restful.group(3):
        return [_issue(f"fullUrl '{full_url}' cannot be version specific", f"{expr}.fullUrl")]
    if isinstance(resource, Mapping):
        kind, rid = restful.group(1), restful.group(2)
        if resource.get("resourceType") != kind or ("id" in resource and resource.get("id") != rid):
            return [_issue(f"fullUrl '{full_url}' does not name this entry's resource "
                           f"({resource.get('resourceType')}/{resource.get('id')})", f"{expr}.fullUrl")]
    return []


def _entry_issues(bundle_type: str, entry: Mapping[str, Any], expr: str) -> list[Issue]:
    issues = _full_url_issues(entry.get("fullUrl"), entry.get("resource"), expr)
    if not any(k in entry for k in ("resource", "request", "response")):
        issues.append(_issue("An entry must have a resource, a request or a response", expr, "required"))
    for key, allowed in (("request", REQUEST_TYPES), ("response", RESPONSE_TYPES)):
        if bundle_type in allowed and key not in entry:
            issues.append(_issue(f"Every entry of a {bundle_type} Bundle needs a {key}", f"{expr}.{key}", "required"))
        elif bundle_type not in allowed and key in entry:
            issues.append(_issue(f"An entry of a {bundle_type} Bundle cannot have a {key}", f"{expr}.{key}"))
    if "search" in entry and bundle_type != "searchset":
        issues.append(_issue(f"Only searchset entries have search (this is a {bundle_type})", f"{expr}.search"))
    return issues


def _unique_full_urls(bundle_type: str, entries: list[Any]) -> list[Issue]:
    """bdl-7: a fullUrl names one entry, unless the entries hold different versions of it (a history
    lists every version of a resource, and may repeat one)."""
    if bundle_type == "history":
        return []
    seen: dict[tuple[str, Any], int] = {}
    issues = []
    for index, entry in enumerate(entries):
        full_url = entry.get("fullUrl") if isinstance(entry, Mapping) else None
        if not isinstance(full_url, str):
            continue
        resource = entry.get("resource")
        meta = resource.get("meta") if isinstance(resource, Mapping) else None
        key = (full_url, meta.get("versionId") if isinstance(meta, Mapping) else None)
        if key in seen:
            issues.append(_issue(f"fullUrl '{full_url}' is also used by entry {seen[key]}"
                                 + (" (same version)" if key[1] is not None else ""),
                                 f"Bundle.entry[{index}].fullUrl"))
        else:
            seen[key] = index
    return issues


def _first_resource_issues(bundle: Mapping[str, Any], bundle_type: str, entries: list[Any]) -> list[Issue]:
    wanted = FIRST_RESOURCE.get(bundle_type)
    if wanted is None:
        return []
    issues = []
    first = entries[0].get("resource") if entries and isinstance(entries[0], Mapping) else None
    if not isinstance(first, Mapping) or first.get("resourceType") != wanted:
        issues.append(_issue(f"The first entry of a {bundle_type} must be its {wanted}",
                             "Bundle.entry[0].resource" if entries else "Bundle.entry", "required"))
    if bundle_type == "document":
        identifier = bundle.get("identifier")
        if not (isinstance(identifier, Mapping) and identifier.get("system") and identifier.get("value")):
            issues.append(_issue("A document needs an identifier with a system and a value", "Bundle.identifier",
                                 "required"))
        if not bundle.get("timestamp"):
            issues.append(_issue("A document needs a timestamp", "Bundle.timestamp", "required"))
    return issues


def bundle_issues(bundle: Mapping[str, Any]) -> list[Issue]:
    """Issues of one Bundle resource (its entries' resources are validated as resources elsewhere)."""
    bundle_type = bundle.get("type")
    if not isinstance(bundle_type, str):
        return []
    raw_entries = bundle.get("entry")
    entries: list[Any] = raw_entries if isinstance(raw_entries, list) else []
    issues: list[Issue] = []
    raw_links = bundle.get("link")
    links: list[Any] = raw_links if isinstance(raw_links, list) else []
    selves = [i for i, link in enumerate(links) if isinstance(link, Mapping) and link.get("relation") == "self"]
    if len(selves) > 1:
        issues.append(_issue("A Bundle has at most one link with relation 'self'", f"Bundle.link[{selves[1]}]"))
    if "total" in bundle and bundle_type not in TOTAL_TYPES:
        issues.append(_issue(f"Only a searchset or history has a total (this is a {bundle_type})", "Bundle.total"))
    for index, entry in enumerate(entries):
        if isinstance(entry, Mapping):
            issues += _entry_issues(bundle_type, entry, f"Bundle.entry[{index}]")
    issues += _unique_full_urls(bundle_type, entries)
    issues += _first_resource_issues(bundle, bundle_type, entries)
    return issues
