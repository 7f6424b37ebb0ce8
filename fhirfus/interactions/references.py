"""Referential integrity: local references resolve, and a resource others reference is not deleted.

Checked at the end of each write transaction, over everything it wrote, the way a database checks
a deferred foreign key: entries of one transaction may reference each other in any order, and a
transaction may delete a resource together with the ones that reference it.

- A *local* reference (``Patient/1``, or an absolute URL under this server's base) in a written
  resource must name a live resource the caller may see — another site's resource is as absent
  as one never written, so the check tells nothing about it. References to other servers,
  ``urn:``, contained (``#x``) and canonical references are not checked here.
- A deleted resource must not be referenced by a live resource the caller may see (409, naming
  the first referrer). The referrers are found through the reference index, i.e. the elements that
  search parameters cover.

``Settings.referential_integrity`` turns both off (``fhirfus load`` of a complete export turns it
off too: the references of a whole export resolve, those of one of its chunks need not).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from functools import cache
from typing import Any, TypeVar

from sqlalchemy import ARRAY, Connection, Select, Text, and_, bindparam, func, or_, select, tuple_
from sqlalchemy.dialects import postgresql

from fhirfus.auth.access import Access
from fhirfus.db import rows as db_rows
from fhirfus.db.tables import search_reference
from fhirfus.db.visibility import Visibility
from fhirfus.errors import Conflict, InvalidResource, Issue
from fhirfus.fhir.bindings import resource_types
from fhirfus.fhir.reference_syntax import relative_fault
from fhirfus.fhir.references import reference_target, references_at
from fhirfus.search.compiler import local_reference

_CHUNK = 500
#: Records of what happened, not data that depends on its target: the audit trail (written by the
#: server only, never changed) names what each request touched, and must neither keep that alive
#: (a 409 on every deletion of anything once audited) nor be reached by ``_cascade=delete``.
RECORDS = ("AuditEvent",)
T = TypeVar("T")


def local_target(reference: str, base: str) -> tuple[str, str] | None:
    """(type, id) of a reference into this server; None for another server's, ``urn:``, ``#x``."""
    if reference.startswith(("urn:", "#")):
        return None
    if "://" in reference:
        prefix = base.rstrip("/") + "/"
        if not base or not reference.startswith(prefix):
            return None
        reference = reference[len(prefix):]
        if relative_fault(reference, resource_types()) is not None:
            # ``{base}/Patient/<65 characters>``: local, and naming nothing (a relative one is refused
            # by its syntax alone, ``fhir.bindings``); as a target no resource has, it is reported missing
            named_type, _, named_id = reference.partition("/")
            return named_type, named_id.partition("/_history/")[0]
    res_type, res_id = reference_target(reference)
    return (res_type, res_id) if res_type and res_id else None


def missing_targets(
    conn: Connection, caller: Access, written: Iterable[tuple[T, dict]], base: str,
    live: Collection[tuple[str, str]] = frozenset(),
) -> list[tuple[T, str, str]]:
    """(tag, element path, ``Type/id``) of each local reference of the ``written`` resources (tagged
    by the caller) that names no live resource the caller may see (the transaction's own writes
    included: they are in ``conn`` already). ``live``: targets the caller knows to be live and
    visible to it (what its transaction created), not looked up."""
    wanted = _wanted(written, base, live)
    if not wanted:
        return []
    return _missing(wanted, _found(conn, caller, list(wanted)))


def _wanted(written: Iterable[tuple[T, dict]], base: str,
            live: Collection[tuple[str, str]] = frozenset()) -> dict[tuple[str, str], list[tuple[T, str]]]:
    """The local targets of the ``written`` resources, each with the (tag, element path) naming it,
    but those in ``live``."""
    wanted: dict[tuple[str, str], list[tuple[T, str]]] = {}
    for tag, resource in written:
        res_type = resource.get("resourceType", "Resource")
        for path, reference in references_at(resource, res_type):
            target = local_target(reference, base)
            if target is not None and target != (res_type, resource.get("id")) and target not in live:
                wanted.setdefault(target, []).append((tag, path))
    return wanted


def _found(conn: Connection, caller: Access, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    statement = _live_among(caller.visibility)
    for start in range(0, len(keys), _CHUNK):
        found.update((r.res_type, r.res_id) for r in conn.execute(statement, {"keys": keys[start:start + _CHUNK]}))
    return found


def _missing(wanted: dict[tuple[str, str], list[tuple[T, str]]], found: set[tuple[str, str]]) -> list[tuple[T, str, str]]:
    return [(tag, path, f"{t}/{i}") for (t, i), named in wanted.items() if (t, i) not in found for tag, path in named]


@cache
def _live_among(seen_by: Visibility) -> Select:
    """The (type, id) of ``:keys`` that name a live resource ``seen_by`` may see: one statement per
    visibility, built once (every write with references runs it; building it cost more than running it)."""
    rows = seen_by.resources()
    return select(rows.c.res_type, rows.c.res_id).where(
        tuple_(rows.c.res_type, rows.c.res_id).in_(bindparam("keys", expanding=True)), rows.c.deleted.is_(False))


@cache
def _live_among_sql(seen_by: Visibility) -> tuple[str, dict[str, Any]]:
    """``_live_among`` for PostgreSQL as psycopg's SQL and its fixed parameters, the keys given as
    two arrays (``:types``, ``:ids``): one text whatever their number, to ride along a write."""
    rows = seen_by.resources()
    keys = select(func.unnest(bindparam("types", [], type_=ARRAY(Text))).label("res_type"),
                  func.unnest(bindparam("ids", [], type_=ARRAY(Text))).label("res_id")).subquery()
    statement = select(rows.c.res_type, rows.c.res_id).where(
        tuple_(rows.c.res_type, rows.c.res_id).in_(select(keys.c.res_type, keys.c.res_id)), rows.c.deleted.is_(False))
    compiled = statement.compile(dialect=postgresql.psycopg.dialect(), compile_kwargs={"render_postcompile": True})
    return str(compiled), dict(compiled.params)


_CHECK = "references.check"


def check_along(conn: Connection, caller: Access, written: list[dict], base: str) -> Callable[[], None]:
    """``check_written`` for resources about to be written in ``conn``'s transaction: called before
    the writes, its read rides along their round trip (PostgreSQL); the function it returns, called
    after them, raises as ``check_written`` would (running the read itself if it did not ride)."""
    wanted = _wanted(((None, resource) for resource in written), base)
    if not wanted:
        return lambda: None
    keys = list(wanted)
    if conn.dialect.name == "postgresql" and len(keys) <= _CHUNK:
        sql, fixed = _live_among_sql(caller.visibility)
        db_rows.ride_along(conn, _CHECK, sql, {**fixed, "types": [t for t, _ in keys], "ids": [i for _, i in keys]})

    def finish() -> None:
        rode = db_rows.ridden(conn, _CHECK)
        found = _found(conn, caller, keys) if rode is None else {(t, i) for t, i in rode}
        if missing := _missing(wanted, found):
            raise dangling(missing)

    return finish


def check_written(conn: Connection, caller: Access, written: Iterable[dict], base: str) -> None:
    """400 naming every reference of ``written`` to a resource that does not exist (for the caller)."""
    missing = missing_targets(conn, caller, ((None, resource) for resource in written), base)
    if missing:
        raise dangling(missing)


def dangling(missing: list[tuple[Any, str, str]]) -> InvalidResource:
    issues = [Issue(f"{path} refers to {target}, which does not exist", "not-found", "error", (path,))
              for _tag, path, target in missing]
    return InvalidResource(issues[0].diagnostics, issues=issues)


def referrers(
    conn: Connection, caller: Access, targets: Iterable[tuple[str, str]], base: str, most: int,
) -> list[tuple[str, str, str, str, str]]:
    """Up to ``most`` (target type, target id, referrer type, referrer id, search parameter) of live
    resources the caller may see that refer to one of ``targets``."""
    keys = [key for key in targets if key]
    link = search_reference
    rows = caller.visibility.resources()
    found: list[tuple[str, str, str, str, str]] = []
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start:start + _CHUNK]
        found.extend(tuple(row) for row in conn.execute(
            select(link.c.target_type, link.c.target_id, rows.c.res_type, rows.c.res_id, link.c.param)
            .join(rows, rows.c.pk == link.c.resource_pk)
            .where(or_(*[and_(link.c.target_type == t, link.c.target_id == i) for t, i in chunk]),
                   local_reference(link, base), rows.c.deleted.is_(False), rows.c.res_type.not_in(RECORDS))
            .distinct()
            .limit(most - len(found))
        ))
        if len(found) >= most:
            break
    return found


def check_deleted(conn: Connection, caller: Access, deleted: Iterable[tuple[str, str]], base: str) -> None:
    """409 if a live resource the caller may see still references one of ``deleted``."""
    for target_type, target_id, res_type, res_id, param in referrers(conn, caller, deleted, base, 1):
        raise Conflict(
            f"{target_type}/{target_id} cannot be deleted: {res_type}/{res_id} refers to it "
            f"({res_type}.{param}); delete or change that resource first, or delete with _cascade=delete",
            f"{target_type}.id")
