"""Criteria of conditional interactions (``If-None-Exist``) resolved to resource ids."""

from __future__ import annotations

from urllib.parse import parse_qsl

from sqlalchemy import Connection, select

from fhirfus.fhir.errors import InvalidRequest
from fhirfus.store.tables import resources


def matching_ids(conn: Connection, res_type: str, criteria: str) -> list[str]:
    """Ids of live resources of ``res_type`` matching a search query string."""
    pairs = parse_qsl(criteria.lstrip("?"), keep_blank_values=True)
    if not pairs:
        raise InvalidRequest("Conditional criteria are empty", "If-None-Exist")
    query = select(resources.c.res_id).where(resources.c.res_type == res_type, resources.c.deleted.is_(False))
    for name, value in pairs:
        if name == "_id":
            query = query.where(resources.c.res_id == value)
        else:
            raise InvalidRequest(f"Unsupported conditional criterion '{name}'", "If-None-Exist")
    return list(conn.execute(query.limit(2)).scalars())
