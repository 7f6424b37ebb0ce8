"""Criteria of conditional interactions (``If-None-Exist``, conditional update/delete) → ids.

They use the search engine itself, so every search parameter works as a condition; unknown
parameters are an error here (ignoring one would widen the match and touch the wrong resource).
Two conditional writes that create when nothing matches, with the same criteria, are serialised
(one waits for the other's commit before it searches), so concurrent ones create one resource.

Criteria are a search: the caller needs the search permission on the type (403 before anything
is matched, since whether something matches is itself an answer). Only resources the caller may
see are candidates: another site's resources neither match nor count, so a condition tells
nothing about them.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from sqlalchemy import Connection, select

from fhirfus.auth.access import Access
from fhirfus.errors import InvalidRequest
from fhirfus.search.compiler import Compiler
from fhirfus.search.query import criteria_types, parse_query
from fhirfus.store import repository


def matching_ids(
    conn: Connection, caller: Access, res_type: str, criteria: str, base_url: str = "", limit: int = 2, *,
    may_create: bool = False,
) -> list[str]:
    """Ids of live resources of ``res_type`` that the caller may see and that match a search query
    string (at most ``limit``)."""
    caller.require(res_type, "s")
    seen_by = caller.visibility
    pairs = [(k, v) for k, v in parse_qsl(criteria.lstrip("?"), keep_blank_values=True) if k not in ("_format", "_pretty")]
    if not pairs:
        raise InvalidRequest("Conditional criteria are empty", "If-None-Exist")
    query = parse_query(res_type, pairs, strict=True)
    if not query.criteria:
        raise InvalidRequest(f"Conditional criteria '{criteria}' select nothing", "If-None-Exist")
    for other in sorted(criteria_types(query)):
        caller.require(other, "s")
    if may_create:
        repository.serialize_on(conn, f"{res_type}?{sorted(pairs)}")
    compiler = Compiler(base_url, seen_by, repository.terminology_lookup(conn, seen_by))
    rows = seen_by.resources()
    conditions = [compiler.criterion(rows, c) for c in query.criteria]
    statement = (
        select(rows.c.res_id)
        .where(rows.c.res_type == res_type, rows.c.deleted.is_(False), *conditions)
        .limit(limit)
    )
    return list(conn.execute(statement).scalars())
