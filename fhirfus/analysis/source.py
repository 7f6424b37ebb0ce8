"""Cohort resolution and the view rows of a cohort, streamed from the store.

Resources are read straight from the ``resources`` table with keyset paging over its primary key:
one pass in pages of ``PAGE`` rows, no long transaction. The query filters nothing but ``pk`` —
``WHERE pk > :after ORDER BY pk LIMIT n`` can only be a primary-key range scan, whereas adding
``res_type IN (…)`` lets PostgreSQL pick the type index and sort every page (quadratic on a large
table). Rows of other types or deleted ones come back without their document (a ``CASE`` in the
select list), so they cost a few bytes. Each page runs through the views and only the rows of
cohort members are kept, as tuples: memory is bounded by the cohort's rows, never by the database.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, and_, case, func, or_, select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB

from fhirfus.analysis.views import AnalysisView
from fhirfus.auth.access import SERVER
from fhirfus.db.visibility import EVERYTHING
from fhirfus.errors import BusinessRuleViolation, Gone
from fhirfus.interactions import crud
from fhirfus.store.repository import Store

#: An analysis reads every site's rows (and lets out only de-identified views of them).
resources = EVERYTHING.resources()

#: ``Group/_all``: every live Patient. FHIR ids cannot contain "_", so no real Group is shadowed.
ALL_PATIENTS = "_all"
PAGE = 5000
PATIENT_KEY = "patient_key"

#: (stage, done, total) — total is None while unknown.
Progress = Callable[[str, int, int | None], None]


@dataclass(frozen=True)
class Cohort:
    """The patients to analyse: a Group's active Patient members, or every Patient."""

    label: str
    group_id: str | None
    members: frozenset[str] | None  # None: every live Patient


def resolve_cohort(store: Store, group_id: str | None) -> Cohort:
    """A ``Group`` (type person, actual) or ``_all``; 404/410 for an unknown or deleted Group.

    The Group is read by the export itself (``SERVER``): an analyst may start an export of a cohort
    without being allowed to read the Group, whose members are identifiable."""
    if not group_id or group_id == ALL_PATIENTS:
        return Cohort("all patients", None, None)
    with store.reading() as conn:
        try:
            group = crud.read_in(conn, SERVER, "Group", group_id).content or {}
        except Gone as exc:  # the answer names no version: the caller may not read the Group
            raise Gone(f"Group/{group_id} was deleted", "Group.id") from exc
    if group.get("type") != "person" or group.get("actual") is not True:
        raise BusinessRuleViolation(
            f"Group/{group_id} is not a cohort: an analysis needs a Group of type 'person' with actual true",
            "Group.type")
    members = set()
    for member in group.get("member", []):
        reference = (member.get("entity") or {}).get("reference", "")
        parts = reference.split("/_history/")[0].split("/")
        if member.get("inactive") is True or len(parts) < 2 or parts[-2] != "Patient":
            continue
        members.add(parts[-1])
    return Cohort(f"Group/{group_id}", group_id, frozenset(members))


@dataclass
class SourceRows:
    """View rows of the cohort (tuples in view column order) and what it took to get them."""

    columns: dict[str, tuple[str, ...]]
    rows: dict[str, list[tuple]]
    patients: list[str] = field(default_factory=list)
    unresolved_members: int = 0
    rows_scanned: int = 0
    resources_read: int = 0
    resources_viewed: int = 0
    rows_out: int = 0
    view_seconds: float = 0.0
    read_seconds: float = 0.0
    fallbacks: int = 0

    def named(self, view: str) -> list[dict]:
        names = self.columns[view]
        return [dict(zip(names, row, strict=True)) for row in self.rows[view]]


def _count(store: Store) -> int:
    """Rows the scan will pass (progress is reported in rows scanned, every type included)."""
    with store.reading() as conn:
        return int(conn.execute(select(func.count()).select_from(resources)).scalar_one())


def _wanted(types: Sequence[str], by_type: dict[str, list[AnalysisView]], dialect: str) -> ColumnElement[bool]:
    """Which rows come back with their document: live, of a viewed type, past any view pre-filter."""
    conditions = []
    for res_type in types:
        prefilters = [v.prefilter for v in by_type[res_type]]
        if dialect != "postgresql" or any(p is None for p in prefilters):
            conditions.append(resources.c.res_type == res_type)
            continue
        contains = [resources.c.content.op("@>")(type_coerce(p, JSONB)) for p in prefilters]
        conditions.append(and_(resources.c.res_type == res_type, or_(*contains)))
    return and_(resources.c.deleted.is_(False), or_(*conditions))


def read_cohort(store: Store, views: Sequence[AnalysisView], cohort: Cohort,
                progress: Progress | None = None, page: int = PAGE) -> SourceRows:
    """Run ``views`` over the live resources of their types, keeping the cohort's rows."""
    by_type: dict[str, list[AnalysisView]] = {}
    for view in views:
        by_type.setdefault(view.resource, []).append(view)
    types = sorted(by_type)
    total = _count(store)
    out = SourceRows({v.name: v.names for v in views}, {v.name: [] for v in views})
    members = cohort.members
    fallbacks_before = sum(v.compiled.fallbacks for v in views)
    patients: list[str] = []
    wanted = _wanted(types, by_type, store.engine.dialect.name)
    content = type_coerce(case((wanted, resources.c.content), else_=None), resources.c.content.type).label("content")
    # No cyclic garbage is made here (JSON documents are trees), but every collection pass would walk
    # the growing row lists: with the collector off, reading is about twice as fast.
    collecting = gc.isenabled()
    gc.disable()
    try:
        _read_pages(store, by_type, members, content, page, out, patients, total, progress)
    finally:
        if collecting:
            gc.enable()
    out.fallbacks = sum(v.compiled.fallbacks for v in views) - fallbacks_before
    out.patients = sorted(set(patients))
    if members is not None:
        out.unresolved_members = len(members - set(out.patients))
    known = set(out.patients)
    for view in views:
        if view.resource != "Patient":
            key_index = view.names.index(PATIENT_KEY)
            out.rows[view.name] = [r for r in out.rows[view.name] if r[key_index] in known]
    return out


def _read_pages(store: Store, by_type: dict[str, list[AnalysisView]], members: frozenset[str] | None,
                content: ColumnElement, page: int, out: SourceRows, patients: list[str], total: int,
                progress: Progress | None) -> None:
    """Page N+1 is fetched on a second thread while page N runs through the views: the database's
    work and the transfer (which release the GIL) overlap with the views (which hold it)."""
    def fetch(after: int) -> list:
        with store.reading() as conn:
            return list(conn.execute(
                select(resources.c.pk, resources.c.res_type, content)
                .where(resources.c.pk > after).order_by(resources.c.pk).limit(page)
            ).all())

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fhirfus-analysis-read") as reader:
        pending = reader.submit(fetch, 0)
        while True:
            started = time.perf_counter()
            batch = pending.result()
            viewing = time.perf_counter()
            out.read_seconds += viewing - started
            if not batch:
                break
            pending = reader.submit(fetch, batch[-1].pk)
            _view_page(batch, by_type, members, out, patients)
            out.rows_scanned += len(batch)
            out.view_seconds += time.perf_counter() - viewing
            if progress:
                progress("reading", out.rows_scanned, max(total, out.rows_scanned))


def contains(document: object, pattern: object) -> bool:
    """JSONB containment (``document @> pattern``) for objects, arrays and scalars."""
    if isinstance(pattern, dict):
        return isinstance(document, dict) and all(k in document and contains(document[k], v) for k, v in pattern.items())
    if isinstance(pattern, list):
        return isinstance(document, list) and all(any(contains(d, p) for d in document) for p in pattern)
    return document == pattern


def _dispatch(views: list[AnalysisView]) -> Callable[[dict], list[AnalysisView]]:
    """The views a document of one type goes through. When several views share the type and each
    has a pre-filter, only those whose pre-filter the document satisfies (the others' ``where``
    would drop it anyway, at several times the cost of the containment check)."""
    if len(views) < 2 or any(v.prefilter is None for v in views):
        return lambda _document: views
    return lambda document: [v for v in views if contains(document, v.prefilter)]


def _view_page(batch: list, by_type: dict[str, list[AnalysisView]], members: frozenset[str] | None,
               out: SourceRows, patients: list[str]) -> None:
    dispatch = {res_type: _dispatch(views) for res_type, views in by_type.items()}
    for record in batch:
        if record.content is None:
            continue
        out.resources_read += 1
        for view in dispatch[record.res_type](record.content):
            rows = view.compiled.rows(record.content)
            out.resources_viewed += 1
            if not rows:
                continue
            names = view.names
            key_index = names.index(PATIENT_KEY)
            target = out.rows[view.name]
            for row in rows:
                values = tuple(row[name] for name in names)
                patient = values[key_index]
                if patient is None or (members is not None and patient not in members):
                    continue
                target.append(values)
                out.rows_out += 1
                if view.resource == "Patient":
                    patients.append(patient)
