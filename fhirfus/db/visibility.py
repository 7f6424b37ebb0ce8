"""Which stored rows a caller may see: the one site filter of every read of resources and history.

A site client sees the ids its site owns and nothing else; everyone else (admins, analysts'
de-identified exports, the server's own work, development mode) sees every row. What a caller may
not see behaves exactly as an id that was never used: the filter is part of the SQL, so a
confined read answers like a miss, at the cost of a miss.

Ownership is the ``site`` column of ``resources`` and ``resource_history``: the site of the id's
``meta.security`` label (system ``SITE_SYSTEM``) when it is first written. It never moves from one
site to another — a tombstone keeps it, so a deleted id stays its site's — and the label of
every later version is the owner's (added when a writer leaves it out, refused when it names
another site). Data of no site (NULL) is seen by unconfined callers only; one of them may give it
to a site, which then owns its whole history. What the server publishes (its implementation
guide: Questionnaire, profiles, terminology) is owned by ``PUBLISHED``: every caller with a site
sees it, only the publisher changes it.

Outside ``fhirfus.store`` the resource tables are reached only through ``Visibility.resources()``
and ``Visibility.history()`` (checked by ``tests/system/test_architecture.py``), so a new read path
cannot forget the filter: it has no other way in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import ColumnElement, FromClause, Text, cast, select, true

from fhirfus.db.tables import resource_history, resources
from fhirfus.errors import BusinessRuleViolation, InvalidRequest, InvalidResource

SITE_SYSTEM = "https://fhirfus.org/fhir/CodeSystem/site"
#: The owner of what the server publishes (its implementation guide): every caller reads it, only
#: the publisher writes it. No client and no label may name it.
PUBLISHED = "*"
#: What a site code may be: what a ``site`` column holds and a label's code can carry.
SITE_CODE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def check_site_code(site: str, element: str = "site") -> str:
    """``site`` when it is a site code, else a 400 naming ``element`` (never a database error)."""
    if not SITE_CODE.fullmatch(site):
        raise InvalidRequest(f"site must be 1 to 64 letters, digits, '.', '_' or '-', got '{site[:80]}'", element)
    return site


@dataclass(frozen=True)
class Visibility:
    """The rows a caller may see: those owned by ``site`` and the published ones, or every row when
    ``site`` is None. ``publishes``: the server publishing its guide, the one writer of published rows."""

    site: str | None
    publishes: bool = False

    @property
    def confined(self) -> bool:
        return self.site is not None

    def _sites(self) -> tuple[str, ...]:
        return (self.site, PUBLISHED) if self.site else ("",)  # a client of no site sees nothing at all

    def rows_of(self, table: FromClause) -> ColumnElement[bool]:
        """The condition on ``table`` (``resources``, ``resource_history`` or an alias of either)."""
        return true() if self.site is None else table.c.site.in_(self._sites())

    def resources(self) -> FromClause:
        """The visible rows of ``resources``, to select from. A fresh alias per call, so one statement
        can hold two (a chain's targets beside its sources)."""
        if self.site is None:
            return resources.alias()
        return select(resources).where(resources.c.site.in_(self._sites())).subquery()

    def history(self) -> FromClause:
        """The visible rows of ``resource_history`` (every version of every visible id)."""
        if self.site is None:
            return resource_history.alias()
        return select(resource_history).where(resource_history.c.site.in_(self._sites())).subquery()

    def sees(self, site: str | None) -> bool:
        """Whether a row owned by ``site`` is visible."""
        return self.site is None or site in self._sites()

    def may_change(self, site: str | None) -> bool:
        """Whether a visible row owned by ``site`` may get a new version (published ones: only by
        the publisher)."""
        return site != PUBLISHED or self.publishes


#: Every row: for admins, development mode and the server's own work (imports, jobs, the CLI).
EVERYTHING = Visibility(None)
#: No row (no site is named ""): what a site client that names no site sees.
NOWHERE = Visibility("")
#: Every row, and the one writer of the published ones.
PUBLISHER = Visibility(None, publishes=True)


def content_text(rows: FromClause) -> ColumnElement[str]:
    """The stored JSON of ``rows`` as text, to be written out as it is (no parse in Python)."""
    return cast(rows.c.content, Text).label("text")


def site_label(content: dict | None) -> str | None:
    """The site named by a resource's ``meta.security`` label (None: no site); two sites, or a code
    that is no site code, → 400."""
    meta = (content or {}).get("meta")
    labels = meta.get("security") if isinstance(meta, dict) else None
    sites = {label.get("code") for label in labels or () if isinstance(label, dict) and label.get("system") == SITE_SYSTEM}
    if len(sites) > 1:
        raise InvalidResource(
            f"A resource belongs to one site; meta.security names {len(sites)} ({', '.join(sorted(map(str, sites)))})",
            f"{(content or {}).get('resourceType', 'Resource')}.meta.security",
        )
    site = next(iter(sites), None)
    if not isinstance(site, str) or not site:
        return None
    if site != PUBLISHED:  # the label becomes the ``site`` column: the one site-code rule, not a database error
        check_site_code(site, f"{(content or {}).get('resourceType', 'Resource')}.meta.security")
    return site


def with_site_label(content: dict, site: str | None) -> dict:
    """``content`` labelled for ``site`` (the owner): the label added when missing, 422 when the
    content names another site. ``site`` None leaves the content as it is."""
    if site is None:
        return content
    named = site_label(content)
    if named == site:
        return content
    if named is not None:
        res_type = content.get("resourceType", "Resource")
        raise BusinessRuleViolation(
            f"{res_type}/{content.get('id', '')} belongs to site {site}; its site label cannot change to {named}",
            f"{res_type}.meta.security",
        )
    meta = dict(content.get("meta") or {})
    meta["security"] = [*(meta.get("security") or []), {"system": SITE_SYSTEM, "code": site}]
    return {**content, "meta": meta}
