"""``$viewdefinition-run`` (SQL on FHIR v2, R4 mode: ``[base]/$viewdefinition-run``; also the
earlier name ``ViewDefinition/$run``): a ViewDefinition — given inline (``viewResource``) or one of
the guide's (``viewReference``: its canonical URL, name or id) — run over the server's resources
that the caller may read, as NDJSON, CSV, JSON or Parquet.

``_limit`` caps the rows, ``_since`` keeps resources changed since an instant, ``patient`` and
``group`` keep the Patient compartments of those patients. A site client's run sees its site's
rows only (``caller.visibility``); an analyst's run is ``deidentified``: a de-identification
policy (``fhirfus.analysis.viewpolicy``) shapes its rows, the caller's scopes do not apply and it
names cohorts (``group``), never patients. Others may ask for a policy too (``policy``). Rows stream as they are made, so a resource whose data
breaks a column contract (several values in a scalar column) is skipped rather than failing the
answer half-way.

Shared by the synchronous run (``fhirfus.api.views``) and the asynchronous
``$viewdefinition-export`` (``fhirfus.bulk.views``), hence here below both.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

import orjson
from sqlalchemy import and_, false, literal, select

from fhirfus.auth.access import SERVER, Access
from fhirfus.db.tables import search_reference
from fhirfus.db.visibility import content_text
from fhirfus.errors import Forbidden, InvalidRequest, NotFound, TooCostly
from fhirfus.fhir.compartment import compartment
from fhirfus.fhir.dates import fhir_search_date
from fhirfus.fhir.numbers import whole_number
from fhirfus.fhir.references import reference_target
from fhirfus.fhir.validation import served_types
from fhirfus.ig import folder
from fhirfus.interactions import binary, crud
from fhirfus.search.compiler import local_reference, params_rows
from fhirfus.sqlonfhir.fastpath import FastView, compile_fast
from fhirfus.sqlonfhir.runner import ViewDefinitionError, ViewEvaluationError
from fhirfus.store.repository import Store

FORMATS = {"ndjson": "application/x-ndjson", "csv": "text/csv; charset=utf-8", "json": "application/json",
           "parquet": "application/vnd.apache.parquet"}
_ALIASES = {"application/x-ndjson": "ndjson", "application/ndjson": "ndjson", "text/csv": "csv",
            "application/json": "json", "application/vnd.apache.parquet": "parquet"}
REPEATED = frozenset({"patient", "group"})
#: Operation inputs by name (``fhirfus.operations.parameters.inputs``).
Inputs = Mapping[str, Any]
PAGE = 1000  # resources read per statement


@dataclass(frozen=True)
class ViewRun:
    """What to run: the compiled view, over which rows, into which format."""

    view: FastView  # compiled where the subset allows, the reference runner elsewhere
    resource_type: str
    format: str
    header: bool
    limit: int | None
    since: datetime | None
    patients: frozenset[str] | None  # None: every patient
    definition: Mapping[str, Any]  # the ViewDefinition as given or as the guide has it
    from_guide: bool  # named by viewReference (one of the guide's), not given inline
    released: tuple[str, ...] | None = None  # the columns a policy lets out (None: every column)

    @property
    def media_type(self) -> str:
        return FORMATS[self.format]

    @property
    def names(self) -> list[str]:
        """The output's columns, in order."""
        return list(self.released) if self.released is not None else [c["name"] for c in self.view.columns]


class RowShaping(Protocol):
    """What a de-identification policy does to a run (``fhirfus.analysis.viewpolicy``)."""

    released: tuple[str, ...]  # the columns it lets out
    policy_name: str
    policy_sha256: str  # of the policy file's bytes, as the analysis export reports it

    def apply(self, rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]: ...


#: (run, policy name) → the policy checked against the run's view (4xx/503 if it cannot apply).
Shaper = Callable[["ViewRun", str | None], RowShaping]


def guide_view(reference: str) -> dict:
    """One of the guide's ViewDefinitions by canonical URL, name or file id."""
    key = reference.removeprefix("ViewDefinition/")
    for path in sorted(folder("views").glob("*.json")):
        view = orjson.loads(path.read_bytes())
        if key in (view.get("url"), view.get("name"), path.stem, view.get("id")):
            return dict(view)
    raise NotFound(f"ViewDefinition '{reference}' is not known to this server", "viewReference")


def prepare(store: Store, caller: Access, given: Inputs, view_id: str | None = None, *,
            deidentified: bool = False) -> ViewRun:
    """Check the caller and every input before a row is read: errors here are 4xx, not a broken stream.

    ``deidentified``: the rows go through a de-identification policy before anybody sees them (an
    analyst's run); otherwise an analyst is refused, as analysts never read raw data."""
    if caller.role == "analyst" and not deidentified:
        raise Forbidden("Analysts read views through a de-identification policy only", "policy")
    if deidentified and given.get("patient"):
        raise Forbidden("A de-identified run names cohorts (group), never patients", "patient")
    view, from_guide = view_of(given, view_id)
    run = compile_run(view, from_guide, _format(given), _flag(given, "header", True), _limit(given), _since(given),
                      None)
    if not deidentified:
        caller.require(run.resource_type, "s")
    # a de-identified run reads the Group as the server does for $analysis-export: analysts may name
    # a cohort without being allowed to read its (identifiable) member list
    patients = _patients(store, SERVER if deidentified else caller, given, run.resource_type)
    return replace(run, patients=patients)


def compile_run(view: Mapping[str, Any], from_guide: bool, fmt: str, header: bool, limit: int | None,
                since: datetime | None, patients: frozenset[str] | None) -> ViewRun:
    """A ViewRun of checked parts (also how an export job rebuilds its runs from the job row)."""
    try:
        compiled = compile_fast(dict(view))
    except ViewDefinitionError as exc:
        raise InvalidRequest(f"Invalid ViewDefinition: {exc}", "viewResource") from exc
    resource_type = str(view.get("resource"))
    if resource_type not in served_types():
        raise InvalidRequest(f"ViewDefinition.resource '{resource_type}' is not a resource type served here",
                             "viewResource")
    return ViewRun(compiled, resource_type, fmt, header, limit, since, patients, dict(view), from_guide)


def view_of(given: Inputs, view_id: str | None = None) -> tuple[dict, bool]:
    """The ViewDefinition the inputs name, and whether it is one of the guide's."""
    view = _view(given, view_id)
    return view, given.get("viewResource") is None


def _view(given: Inputs, view_id: str | None) -> dict:
    inline, reference = given.get("viewResource"), given.get("viewReference")
    if view_id is not None:
        reference = view_id
    if (inline is None) == (reference is None):
        raise InvalidRequest("Give exactly one ViewDefinition: viewResource or viewReference", "viewResource")
    if inline is not None:
        if not isinstance(inline, Mapping) or inline.get("resourceType") != "ViewDefinition":
            raise InvalidRequest("viewResource must be a ViewDefinition resource", "viewResource")
        return dict(inline)
    if isinstance(reference, Mapping):
        reference = reference.get("reference")
    if not isinstance(reference, str) or not reference:
        raise InvalidRequest("viewReference must name a ViewDefinition", "viewReference")
    return guide_view(reference)


def _format(given: Inputs) -> str:
    value = str(given.get("_format") or "ndjson").lower().split(";")[0].strip()
    value = _ALIASES.get(value, value)
    if value not in FORMATS:
        raise InvalidRequest(f"_format must be one of {', '.join(FORMATS)}, not {value!r}", "_format")
    return value


def _flag(given: Inputs, name: str, default: bool) -> bool:
    value = given.get(name)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if str(value).lower() not in ("true", "false"):
        raise InvalidRequest(f"{name} must be true or false", name)
    return str(value).lower() == "true"


def _limit(given: Inputs) -> int | None:
    value = given.get("_limit")
    return None if value is None else whole_number(value, "_limit", minimum=1)


def _since(given: Inputs) -> datetime | None:
    value = given.get("_since")
    if value is None:
        return None
    try:
        return fhir_search_date(str(value)).low
    except ValueError as exc:
        raise InvalidRequest(f"_since must be an instant, not {value!r}", "_since") from exc


def _patients(store: Store, caller: Access, given: Inputs, resource_type: str) -> frozenset[str] | None:
    patients, groups = given.get("patient"), given.get("group")
    if not patients and not groups:
        return None
    if resource_type != "Patient" and resource_type not in compartment():
        raise InvalidRequest(f"{resource_type} is not in the Patient compartment: patient and group do not apply",
                             "patient")
    ids: set[str] = set()
    for value in patients or ():
        ids.add(_patient_id(value, "patient"))
    for value in groups or ():
        group_id = _reference_id(value, "Group", "group")
        members = (crud.read(store, caller, "Group", group_id).content or {}).get("member") or []
        for member in members:
            target = reference_target(str((member.get("entity") or {}).get("reference", "")))
            if target[0] == "Patient" and target[1]:
                ids.add(target[1])
    return frozenset(ids)


def _patient_id(value: Any, name: str) -> str:
    return _reference_id(value, "Patient", name)


def _reference_id(value: Any, res_type: str, name: str) -> str:
    if isinstance(value, Mapping):
        value = value.get("reference")
    text = str(value or "")
    if "/" not in text:
        text = f"{res_type}/{text}"
    found_type, found_id = reference_target(text)
    if found_type != res_type or not found_id:
        raise InvalidRequest(f"{name} must name a {res_type} (id or {res_type}/id), not {value!r}", name)
    return found_id


# --- running ----------------------------------------------------------------------------------


def rows(store: Store, caller: Access, run: ViewRun, base: str) -> Iterator[dict[str, Any]]:
    """The view's rows over the caller's resources, page by page (one short read per page)."""
    produced, after = 0, 0
    while True:
        with store.reading() as conn:
            page = conn.execute(_page(caller, run, base, after)).all()
            shown = _readable(conn, caller, run, page)
        for _pk, text in shown:
            try:
                for row in run.view.rows(orjson.loads(text)):
                    yield row
                    produced += 1
                    if run.limit is not None and produced >= run.limit:
                        return
            except ViewEvaluationError:
                continue  # data breaking a column contract (several values in a scalar column): no row
        if len(page) < PAGE:
            return
        after = page[-1][0]


def _readable(conn: Any, caller: Access, run: ViewRun, page: Sequence[Any]) -> Sequence[Any]:
    """The page without the Binaries whose ``securityContext`` the caller may not read: a view
    shows what a search would (``interactions.binary``), nothing more."""
    if run.resource_type != "Binary":
        return page
    return [row for row in page if binary.may_read(conn, caller, orjson.loads(row[1]))]


def _page(caller: Access, run: ViewRun, base: str, after: int) -> Any:
    visible = caller.visibility.resources()
    conditions = [visible.c.res_type == run.resource_type, visible.c.deleted.is_(False), visible.c.pk > after]
    if run.since is not None:
        conditions.append(visible.c.last_updated >= run.since)
    if run.patients is not None:
        if run.resource_type == "Patient":
            conditions.append(visible.c.res_id.in_(sorted(run.patients)))
        else:
            link = search_reference
            codes = compartment().get(run.resource_type, ())
            probe = select(literal(1)).select_from(link).where(
                link.c.resource_pk == visible.c.pk, link.c.target_type == "Patient",
                link.c.target_id.in_(sorted(run.patients)),
                and_(link.c.res_type == run.resource_type, params_rows(link, run.resource_type, codes))
                if codes else false(),
                local_reference(link, base))
            conditions.append(probe.limit(1).scalar_subquery().is_not(None))
    return (select(visible.c.pk, content_text(visible)).where(*conditions)
            .order_by(visible.c.pk).limit(PAGE))


CHUNK_BYTES = 1 << 16  # bytes handed to the server at once: one thread hop per chunk, not per row


def encode(run: ViewRun, produced: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    """The rows in the run's format, in chunks of about ``CHUNK_BYTES`` (Parquet: one file)."""
    pending: list[bytes] = []
    size = 0
    for piece in _pieces(run, produced):
        pending.append(piece)
        size += len(piece)
        if size >= CHUNK_BYTES:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


def _pieces(run: ViewRun, produced: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    names = run.names
    if run.format == "ndjson":
        for row in produced:
            yield orjson.dumps(row) + b"\n"
    elif run.format == "json":
        yield b"["
        for index, row in enumerate(produced):
            yield (b"," if index else b"") + orjson.dumps(row)
        yield b"]"
    elif run.format == "csv":
        if run.header:
            yield _csv_line(names)
        for row in produced:
            yield _csv_line([_cell(row.get(name)) for name in names])
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist([{n: _cell(r.get(n)) if isinstance(r.get(n), list | dict) else r.get(n)
                                       for n in names} for r in _at_most(produced, PARQUET_ROWS)], schema=None)
        if table.num_columns == 0:
            table = pa.table({name: pa.array([], pa.string()) for name in names})
        sink = io.BytesIO()
        pq.write_table(table, sink)
        yield sink.getvalue()


#: A Parquet file is made whole in memory (its footer describes every row group): beyond this many
#: rows, a run asks for a streamed format instead of growing the server's memory without bound.
PARQUET_ROWS = 200_000


def _at_most(produced: Iterator[dict[str, Any]], most: int) -> Iterator[dict[str, Any]]:
    for count, row in enumerate(produced):
        if count >= most:
            raise TooCostly(f"A Parquet answer holds at most {most} rows; use _format=ndjson or csv (streamed), "
                            "or _limit", "_format")
        yield row


def _cell(value: Any) -> Any:
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    if value is None:
        return ""
    return value


def _csv_line(cells: list[Any]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(cells)
    return out.getvalue().encode()
