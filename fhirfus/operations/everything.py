"""``Patient/[id]/$everything``: the patient and its compartment (official CompartmentDefinition).

A resource belongs to the compartment when one of the compartment's reference parameters of its
type points at the patient; the reference index answers that in SQL. Paging is keyset on the
primary key, so pages do not drift while the record grows.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from sqlalchemy import ColumnElement, and_, or_, select

from fhirfus.auth.access import Access
from fhirfus.db.tables import search_reference
from fhirfus.db.visibility import content_text
from fhirfus.errors import InvalidRequest
from fhirfus.fhir.compartment import compartment
from fhirfus.fhir.dates import fhir_search_date
from fhirfus.fhir.validation import require_known_type, require_valid_id
from fhirfus.interactions import crud
from fhirfus.interactions.paging import decode_cursor, encode_cursor, fits, page_size, page_url
from fhirfus.search.compiler import local_reference, params_rows
from fhirfus.store.repository import Store


def everything_bundle(
    store: Store, caller: Access, base: str, patient_id: str, params: Mapping[str, str], *, default_count: int, max_count: int,
) -> dict:
    """One page of the patient's compartment; resources are ``orjson.Fragment``s of their stored JSON."""
    caller.require("Patient", "r")
    require_valid_id(patient_id, "Patient")
    count = page_size(params.get("_count"), default_count, max_count)
    types = [t for t in (params.get("_type") or "").split(",") if t]
    for t in types:
        require_known_type(t)
    since = None
    if params.get("_since"):
        try:
            since = fhir_search_date(params["_since"]).low
        except ValueError as exc:
            raise InvalidRequest(f"_since must be an instant, got '{params['_since']}'", "_since") from exc
    after = None
    if params.get("_cursor"):
        values = decode_cursor(store.engine, params["_cursor"])
        if len(values) != 1 or not fits(values[0], int):
            raise InvalidRequest("Invalid paging cursor", "_cursor")
        after = values[0]

    wanted = {t: codes for t, codes in compartment().items() if (not types or t in types) and caller.may_read(t)}
    link = search_reference
    members = select(link.c.resource_pk).where(
        link.c.target_type == "Patient",
        link.c.target_id == patient_id,
        local_reference(link, base),
        or_(*[and_(link.c.res_type == t, params_rows(link, t, codes)) for t, codes in wanted.items()]),
    )
    record = caller.visibility.resources()
    selection: list[ColumnElement[bool]] = [record.c.pk.in_(members)]
    if not types or "Patient" in types:
        selection.append(and_(record.c.res_type == "Patient", record.c.res_id == patient_id))
    conditions = [record.c.deleted.is_(False), or_(*selection)]
    if since is not None:
        conditions.append(record.c.last_updated >= since)
    if after is not None:
        conditions.append(record.c.pk > after)
    with store.reading() as conn:
        crud.read_in(conn, caller, "Patient", patient_id)  # 404 / 410 for an unknown or deleted patient
        rows = conn.execute(
            select(record.c.pk, record.c.res_type, record.c.res_id, content_text(record))
            .where(*conditions)
            .order_by(record.c.pk)
            .limit(count + 1)
        ).all()
    more = len(rows) > count
    rows = rows[:count]
    path = f"{base}/Patient/{patient_id}/$everything"
    kept = [(k, v) for k, v in params.items() if k in ("_since", "_type", "_count")]
    links = [{"relation": "self", "url": page_url(path, kept)}]
    if more and rows:
        token = encode_cursor(store.engine, [rows[-1].pk])
        next_params = [(k, v) for k, v in kept if k != "_count"] + [("_count", str(count)), ("_cursor", token)]
        links.append({"relation": "next", "url": page_url(path, next_params)})
    bundle: dict = {"resourceType": "Bundle", "type": "searchset", "link": links}
    if rows:
        bundle["entry"] = [
            {"fullUrl": f"{base}/{r.res_type}/{r.res_id}", "resource": orjson.Fragment(r.text),
             "search": {"mode": "match"}}
            for r in rows
        ]
    return bundle

