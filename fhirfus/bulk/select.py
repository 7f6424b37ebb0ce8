"""Which resources an export contains, as one SQL condition on the rows it reads from (the
requester's visible ``resources``: ``Visibility.resources()``).

The order of the Bulk Data v2 parameter processing: patients (level, group, ``patient``) →
``_type`` → ``_since`` → ``_typeFilter`` (types with filters keep only resources matching at least
one of their queries; types without filters keep everything). All of it is SQL over the search
index, so nothing is filtered in Python and memory does not grow with the export.

The Patient compartment is the official CompartmentDefinition (``fhirfus.fhir.compartment``):
a resource is in patient P's compartment when one of the compartment's reference parameters of
its type points at Patient/P; a Patient is in its own compartment.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from sqlalchemy import ColumnElement, Connection, FromClause, and_, delete, false, insert, literal, or_, select, true

from fhirfus.bulk.params import ExportRequest, allowed_types
from fhirfus.db.tables import export_job_matches, export_job_patients, search_reference
from fhirfus.db.visibility import Visibility
from fhirfus.fhir.compartment import compartment
from fhirfus.interactions.search import match_condition
from fhirfus.search.compiler import Compiler, local_reference, params_rows
from fhirfus.search.query import parse_query
from fhirfus.store import repository
from fhirfus.terminology.expansion import Lookup


def export_types(request: ExportRequest) -> list[str]:
    """The resource types the export can contain, sorted (also the order of the manifest)."""
    return sorted(request.types) if request.types else sorted(allowed_types(request.level))


def selection(
    rows: FromClause, request: ExportRequest, job_id: str | None, terminology: Lookup,
) -> ColumnElement[bool]:
    """Live-or-not resources the request selects (snapshot and deletion are the runner's job);
    ``terminology`` finds stored value sets for ``:in`` in unstaged ``_typeFilter``s."""
    conditions: list[ColumnElement[bool]] = []
    types = export_types(request)
    if request.types or request.level != "system":
        conditions.append(rows.c.res_type.in_(types))
    since = request.since_instant
    if since is not None:
        conditions.append(rows.c.last_updated > since)
    if request.level != "system":
        conditions.append(_compartment_condition(rows, types, job_id if _staged(request) else None, request.base_url))
    if request.type_filters:
        conditions.append(_staged_matches(rows, request, job_id) if job_id
                          else type_filter_condition(rows, request, terminology))
    return and_(true(), *conditions)


def _staged(request: ExportRequest) -> bool:
    """Patient sets (a group, the ``patient`` parameter) live in ``export_job_patients``."""
    return request.level == "group" or bool(request.patients)


def _compartment_condition(rows: FromClause, types: list[str], job_id: str | None, base_url: str) -> ColumnElement[bool]:
    """In the compartment of any patient (``job_id`` None) or of the job's staged patients
    (patients of this server: ``base_url`` tells its absolute references from other servers').

    Written as correlated scalar sub-selects with ``LIMIT 1`` (one index probe per row on
    ``search_reference.resource_pk``): PostgreSQL turns an ``EXISTS``/``IN`` here into a hashed
    sub-plan over the whole compartment, rebuilt for every page — quadratic for a large export.
    """
    link = search_reference
    params = [and_(link.c.res_type == t, params_rows(link, t, codes)) for t, codes in compartment().items() if t in types]
    param_condition = or_(*params) if params else false()
    probe = select(literal(1)).select_from(link).where(
        link.c.resource_pk == rows.c.pk, link.c.target_type == "Patient", param_condition,
        local_reference(link, base_url),
    )
    patient_itself: ColumnElement[bool] = rows.c.res_type == "Patient"
    if job_id is not None:
        staged = export_job_patients
        probe = probe.join(staged, and_(staged.c.job_id == job_id, staged.c.patient_id == link.c.target_id))
        is_staged = (
            select(literal(1)).where(staged.c.job_id == job_id, staged.c.patient_id == rows.c.res_id).limit(1)
        )
        patient_itself = and_(patient_itself, is_staged.scalar_subquery().is_not(None))
    member = probe.limit(1).scalar_subquery().is_not(None)
    return or_(patient_itself, member) if "Patient" in types else member


def type_filter_condition(rows: FromClause, request: ExportRequest, terminology: Lookup) -> ColumnElement[bool]:
    """Resources of filtered types match one of their type's queries; other types pass."""
    compiler = Compiler(request.base_url, Visibility(request.site), terminology)
    alternatives: list[ColumnElement[bool]] = [rows.c.res_type.not_in(_filtered_types(request))]
    for res_type, query in request.type_filters:
        parsed = parse_query(res_type, parse_qsl(query, keep_blank_values=True), strict=True)
        alternatives.append(match_condition(rows, {res_type: parsed}, compiler))
    return or_(*alternatives)


def stage_type_filters(conn: Connection, job_id: str, request: ExportRequest) -> int:
    """Evaluate the ``_typeFilter`` queries once, into ``export_job_matches``; how many matched.

    A search condition is an ``IN (sub-select)`` over the index tables, which PostgreSQL hashes
    (or sorts) in full for every query that uses it: run once per page, that is quadratic in the
    export size. Staged once, each page only probes the primary key of the staging table. The
    matches are also as of the job's start, like the rest of the snapshot.
    """
    matches = export_job_matches
    conn.execute(delete(matches).where(matches.c.job_id == job_id))
    seen_by = Visibility(request.site)
    rows = seen_by.resources()
    matching = select(literal(job_id), rows.c.pk).where(
        rows.c.res_type.in_(_filtered_types(request)),
        type_filter_condition(rows, request, repository.terminology_lookup(conn, seen_by)),
    )
    return conn.execute(insert(matches).from_select(["job_id", "resource_pk"], matching)).rowcount


def _staged_matches(rows: FromClause, request: ExportRequest, job_id: str) -> ColumnElement[bool]:
    matches = export_job_matches
    probe = select(literal(1)).where(matches.c.job_id == job_id, matches.c.resource_pk == rows.c.pk).limit(1)
    return or_(rows.c.res_type.not_in(_filtered_types(request)), probe.scalar_subquery().is_not(None))


def _filtered_types(request: ExportRequest) -> list[str]:
    return sorted({res_type for res_type, _ in request.type_filters})
