"""Type-level search as ``searchset`` Bundles.

Foundation scope: ``_id``, ``_count``, ``_total``, ``_summary=count`` and keyset paging over the
resources table. Other parameters are ignored (and left out of the ``self`` link), or refused
with 400 under ``Prefer: handling=strict``.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlencode

from sqlalchemy import func, select

from fhirfus.fhir.errors import InvalidRequest
from fhirfus.fhir.validation import require_known_type
from fhirfus.operations.paging import decode_cursor, encode_cursor, page_size
from fhirfus.store.repository import Store
from fhirfus.store.tables import resources

SUPPORTED = ("_id",)
RESULT_PARAMETERS = ("_count", "_total", "_summary", "_cursor", "_format", "_pretty", "_totalMethod")


def search_bundle(
    store: Store,
    base: str,
    res_type: str,
    params: Sequence[tuple[str, str]],
    *,
    default_count: int,
    max_count: int,
    strict: bool = False,
) -> dict:
    require_known_type(res_type)
    criteria: list[tuple[str, str]] = []
    result: dict[str, str] = {}
    for name, value in params:
        if name in SUPPORTED:
            criteria.append((name, value))
        elif name in RESULT_PARAMETERS:
            result[name] = value
        elif strict:
            raise InvalidRequest(f"Unknown or unsupported search parameter '{name}'", name)
    count = page_size(result.get("_count"), default_count, max_count)
    if result.get("_summary") == "count":
        count = 0
    query = select(resources.c.pk, resources.c.content).where(
        resources.c.res_type == res_type, resources.c.deleted.is_(False)
    )
    for name, value in criteria:
        if name == "_id":
            query = query.where(resources.c.res_id.in_(value.split(",")))
    after = int(decode_cursor(result["_cursor"])[0]) if result.get("_cursor") else None
    with store.reading() as conn:
        total = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
        page = query.order_by(resources.c.pk)
        if after is not None:
            page = page.where(resources.c.pk > after)
        rows = conn.execute(page.limit(count + 1)).all() if count > 0 else []
    has_more = len(rows) > count
    rows = rows[:count]
    path = f"{base}/{res_type}"
    kept = criteria + [(k, v) for k, v in result.items() if k in ("_count", "_total", "_summary")]
    links = [{"relation": "self", "url": _url(path, kept + ([("_cursor", result["_cursor"])] if after else []))}]
    if has_more:
        token = encode_cursor([rows[-1].pk])
        links.append({"relation": "next", "url": _url(path, [*kept, ("_count", str(count)), ("_cursor", token)])})
    bundle: dict = {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links}
    if rows:
        bundle["entry"] = [
            {
                "fullUrl": f"{base}/{res_type}/{row.content['id']}",
                "resource": row.content,
                "search": {"mode": "match"},
            }
            for row in rows
        ]
    return bundle


def _url(path: str, params: list[tuple[str, str]]) -> str:
    deduplicated = list(dict.fromkeys(params))
    return f"{path}?{urlencode(deduplicated)}" if deduplicated else path
