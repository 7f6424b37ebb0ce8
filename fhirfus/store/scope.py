"""Row-level confinement: a site client sees only rows labelled with its site.

The label is ``meta.security`` ``https://fhirfus.org/fhir/CodeSystem/site|SITE``, indexed like any
``_security`` token, so confinement is one more SQL condition on every query, applied before
paging. The API sets the site per request (``confined_to``); None means unconfined.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from sqlalchemy import ColumnElement, FromClause, select, true

from fhirfus.store.tables import search_token

SITE_SYSTEM = "https://fhirfus.org/fhir/CodeSystem/site"
_site: ContextVar[str | None] = ContextVar("fhirfus_site", default=None)


def confined_site() -> str | None:
    return _site.get()


@contextmanager
def confined_to(site: str | None) -> Iterator[None]:
    token = _site.set(site)
    try:
        yield
    finally:
        _site.reset(token)


def site_condition(alias: FromClause) -> ColumnElement[bool]:
    """Rows of ``alias`` (a resources alias) the current caller may see."""
    site = _site.get()
    if site is None:
        return true()
    labelled = select(search_token.c.resource_pk).where(
        search_token.c.param == "_security", search_token.c.system == SITE_SYSTEM, search_token.c.code == site
    )
    return alias.c.pk.in_(labelled)


def labelled_for_site(content: dict | None) -> bool:
    """Whether a stored resource carries the current caller's site label (always True unconfined)."""
    site = _site.get()
    if site is None:
        return True
    labels = ((content or {}).get("meta") or {}).get("security") or []
    return any(label.get("system") == SITE_SYSTEM and label.get("code") == site for label in labels)
