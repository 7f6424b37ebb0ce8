"""History interactions (instance, type, system) as ``history`` Bundles with keyset paging."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import Engine

from fhirfus.auth.access import Access
from fhirfus.errors import InvalidRequest, NotFound
from fhirfus.fhir.dates import parse_date_range
from fhirfus.fhir.validation import require_known_type, require_valid_id
from fhirfus.interactions import binary
from fhirfus.interactions.paging import decode_cursor, encode_cursor, fits, page_size, page_url
from fhirfus.store import repository
from fhirfus.store.repository import HistoryCursor, Store, Stored, format_instant

_STATUS = {"POST": "201 Created", "PUT": "200 OK", "PATCH": "200 OK", "DELETE": "204 No Content"}


def _since(params: Mapping[str, str]) -> datetime | None:
    raw = params.get("_since")
    if not raw:
        return None
    try:
        return parse_date_range(raw)[0]
    except ValueError as exc:
        raise InvalidRequest(f"_since must be a FHIR instant, got '{raw}'", "_since") from exc


def _cursor(engine: Engine, params: Mapping[str, str]) -> HistoryCursor | None:
    raw = params.get("_cursor")
    if not raw:
        return None
    values = decode_cursor(engine, raw)
    try:
        moment, res_type, res_id, version = values
        if not (fits(moment, str) and fits(res_type, str) and fits(res_id, str) and fits(version, int)):
            raise ValueError(values)
        return HistoryCursor(datetime.fromisoformat(moment), res_type, res_id, version)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"Invalid paging cursor '{raw}'", "_cursor") from exc


def _entry(base: str, stored: Stored) -> dict:
    url = f"{base}/{stored.res_type}/{stored.res_id}"
    entry: dict = {"fullUrl": url}
    if stored.content is not None:
        entry["resource"] = stored.content
    request_url = stored.res_type if stored.method == "POST" else f"{stored.res_type}/{stored.res_id}"
    entry["request"] = {"method": stored.method, "url": request_url}
    entry["response"] = {
        "status": _STATUS.get(stored.method, "200 OK"),
        "etag": f'W/"{stored.version}"',
        "lastModified": format_instant(stored.last_updated),
    }
    return entry


def history_bundle(
    store: Store,
    caller: Access,
    base: str,
    params: Mapping[str, str],
    *,
    default_count: int,
    max_count: int,
    res_type: str | None = None,
    res_id: str | None = None,
) -> dict:
    """One page of history, newest first, with ``self`` and ``next`` links: the versions of the ids
    the caller may see (a site's ids keep their history after a delete, and only theirs)."""
    if res_type is not None:
        require_known_type(res_type)
    caller.require(res_type or "*", "r" if res_id is not None else "s")
    if res_id is not None:
        require_valid_id(res_id, res_type or "Resource")
    count = page_size(params.get("_count"), default_count, max_count)
    since = _since(params)
    after = _cursor(store.engine, params)
    with store.reading() as conn:
        if res_id is not None and repository.current(conn, caller.visibility, res_type or "", res_id) is None:
            raise NotFound(f"{res_type}/{res_id} not found", f"{res_type}.id")
        entries, total, has_more = repository.history(
            conn, caller.visibility, res_type=res_type, res_id=res_id, since=since, after=after, count=count
        )
        shown = binary.readable(conn, caller, entries, lambda stored: stored.content)
    path = "/".join(p for p in (base, res_type, res_id, "_history") if p)
    kept = {k: v for k, v in params.items() if k in ("_since", "_count")}
    links = [{"relation": "self", "url": page_url(path, {**kept, **({"_cursor": params["_cursor"]} if after else {})})}]
    if has_more and entries:
        last = entries[-1]
        token = encode_cursor(store.engine, [last.last_updated.isoformat(), last.res_type, last.res_id, last.version])
        links.append({"relation": "next", "url": page_url(path, {**kept, "_count": str(count), "_cursor": token})})
    return {
        "resourceType": "Bundle",
        "type": "history",
        "total": total,
        "link": links,
        "entry": [_entry(base, e) for e in shown],
    }

