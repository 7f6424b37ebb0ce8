"""On PostgreSQL the main search shapes are answered through indexes, never sequential scans.

A throw-away database is seeded with generated resources and ANALYZEd, so the planner works
from real statistics; for selective criteria (one patient, one identifier, a name prefix) any
sequential scan in the plan means a missing or unusable index (e.g. a prefix LIKE without
``text_pattern_ops``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import pytest
from conftest import database_url_for
from sqlalchemy import Connection, Engine, and_, select

from fhirfus.db import migrate
from fhirfus.db.engine import make_engine
from fhirfus.db.tables import search_reference
from fhirfus.db.visibility import EVERYTHING, SITE_SYSTEM, Visibility
from fhirfus.interactions.search import match_condition
from fhirfus.search.compiler import Compiler, lead_rank
from fhirfus.search.lead import FIRST_CAP, GROWTH, LAST_CAP, count_statement, index_counter, pick_lead
from fhirfus.search.query import parse_query
from fhirfus.store import repository
from fhirfus.store.repository import NewResource, Store
from fhirfus.store.statistics import STATISTICS_TABLES

FOREIGN = "https://ehr.example.org/fhir"
CANONICAL = "https://example.org/fhir/Questionnaire/q"

#: shape → (type, parameters, fragments that an index condition of the plan must contain)
SHAPES = {
    "observation-by-patient-code-date": (
        "Observation", [("patient", "Patient/p1"), ("code", "http://loinc.org|8867-4"), ("date", "ge2021-01-01")],
        ["target_id)::text = 'p1'"],
    ),
    "observation-by-subject-id": ("Observation", [("subject", "p1")], ["target_id)::text = 'p1'"]),
    "patient-by-family-prefix": ("Patient", [("family", "smith12")], ["value ~>=~ 'smith12'"]),
    "patient-by-identifier": ("Patient", [("identifier", "urn:sys|123")], ["code = '123'"]),
    "patient-by-birthdate-le": ("Patient", [("birthdate", "le1931-03")], ["low <"]),
    "observation-by-quantity": ("Observation", [("value-quantity", "gt99.5|http://unitsofmeasure.org|mg")], ["value > "]),
    "observation-chained-patient-name": ("Observation", [("subject:Patient.name", "smith12")], ["value ~>=~ 'smith12'"]),
    "observation-by-foreign-subject-url": (
        "Observation", [("subject", f"{FOREIGN}/Patient/p7")], ["target_id)::text = 'p7'"],
    ),
    "response-by-questionnaire-canonical": (
        "QuestionnaireResponse", [("questionnaire", f"{CANONICAL}|2")], [f"url = '{CANONICAL}|2'"],
    ),
}


def _generated(count: int) -> list[NewResource]:
    """Patients with responses and observations, of three sites (every resource labelled)."""
    rng = random.Random(7)
    items = []
    for n in range(count):
        pid = f"p{n}"
        meta = {"security": [{"system": SITE_SYSTEM, "code": "ABC"[n % 3]}]}
        items.append(NewResource("Patient", pid, {
            "resourceType": "Patient", "meta": meta,
            "identifier": [{"system": "urn:sys", "value": str(n)}],
            "name": [{"family": rng.choice(["Smith", "Jones", "Müller", "Garcia", "Brown"]) + str(n)}],
            "birthDate": f"{rng.randint(1930, 2010)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        }))
        items.append(NewResource("QuestionnaireResponse", f"qr{n}", {
            "resourceType": "QuestionnaireResponse", "status": "completed", "meta": meta,
            "questionnaire": f"{CANONICAL}|{n % 50}", "subject": {"reference": f"{FOREIGN}/Patient/{pid}"},
        }))
        for k in range(3):
            items.append(NewResource("Observation", f"o{n}-{k}", {
                "resourceType": "Observation", "status": "final", "meta": meta,
                "code": {"coding": [{"system": "http://loinc.org", "code": rng.choice(["8867-4", "8310-5", "29463-7"])}]},
                "subject": {"reference": f"Patient/{pid}"},
                "effectiveDateTime": f"{rng.randint(2015, 2024)}-{rng.randint(1, 12):02d}-01",
                "valueQuantity": {"value": rng.randint(1, 100), "system": "http://unitsofmeasure.org", "code": "mg"},
            }))
    return items


@pytest.fixture(scope="module")
def seeded_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    generator = database_url_for("postgresql", tmp_path_factory)
    engine = make_engine(next(generator))
    try:
        migrate.upgrade(engine)
        with Store(engine).writing() as conn:
            repository.create_many(conn, _generated(1500))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")  # outside a transaction: statistics must persist
        yield engine
    finally:
        engine.dispose()
        next(generator, None)


def _plan(engine: Engine, statement) -> str:
    compiled = statement.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("EXPLAIN " + compiled.string, compiled.params).all()
    return "\n".join(r[0] for r in rows)


def _assert_indexed(plan: str, fragments: list[str]) -> None:
    assert "Seq Scan" not in plan, plan
    index_conditions = "\n".join(line for line in plan.splitlines() if "Index Cond" in line)
    for fragment in fragments:
        assert fragment in index_conditions, plan


@pytest.mark.parametrize("seen_by", [EVERYTHING, Visibility("A")], ids=["unconfined", "site"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_search_shape_uses_indexes(seeded_postgres: Engine, shape: str, seen_by: Visibility) -> None:
    """Also for a site client: its site filter narrows the rows the index found, never a scan."""
    res_type, params, fragments = SHAPES[shape]
    rows = seen_by.resources()
    condition = match_condition(rows, {res_type: parse_query(res_type, params)}, Compiler("http://localhost/fhir", seen_by))
    statement = select(rows.c.pk).where(condition).order_by(rows.c.pk).limit(20)
    _assert_indexed(_plan(seeded_postgres, statement), fragments)


def test_revinclude_lookup_uses_the_target_index(seeded_postgres: Engine) -> None:
    link = search_reference
    statement = select(link.c.resource_pk).where(
        link.c.target_type == "Patient", link.c.target_id.in_(["p1", "p2"]), link.c.res_type == "Observation",
        link.c.param == "subject",
    )
    plan = _plan(seeded_postgres, statement)
    _assert_indexed(plan, ["target_type)::text = 'Patient'", "target_id)::text = ANY"])


# --- plans that do not depend on the statistics ------------------------------------------------------

@pytest.fixture(scope="module")
def unanalysed_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """Data as it is right after a load, before any ``ANALYZE``: 50 patients × 100 Observations, nine
    in ten of one common code. The planner knows nothing of the rows and guesses one per code."""
    generator = database_url_for("postgresql", tmp_path_factory)
    engine = make_engine(next(generator))
    try:
        migrate.upgrade(engine)
        with engine.begin() as conn:
            for table in STATISTICS_TABLES:
                conn.exec_driver_sql(f'ALTER TABLE "{table}" SET (autovacuum_enabled = false)')
        items = []
        for p in range(50):
            items.append(NewResource("Patient", f"p{p}", {"resourceType": "Patient"}))
            items += [NewResource("Observation", f"o{p}-{k}", {
                "resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "common" if k % 10 else f"rare{k}"}]},
                "subject": {"reference": f"Patient/p{p}"}}) for k in range(100)]
        with Store(engine).writing() as conn:
            repository.create_many(conn, items)
        yield engine
    finally:
        engine.dispose()
        next(generator, None)


def _token_rows_read(engine: Engine, statement) -> int:  # type: ignore[no-untyped-def]
    """Rows the executed plan took from ``search_token`` (over all its loops)."""
    compiled = statement.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
    with engine.connect() as conn:
        plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + compiled.string, compiled.params).scalar_one()

    def walk(node: dict) -> int:
        own = node["Actual Rows"] * node["Actual Loops"] if node.get("Relation Name") == "search_token" else 0
        return own + sum(walk(child) for child in node.get("Plans", []))
    return walk(plan[0]["Plan"])


@pytest.mark.parametrize("seen_by", [EVERYTHING, Visibility("A")], ids=["unconfined", "site"])
def test_a_search_starts_from_its_most_selective_kind_of_criterion_without_statistics(
    unanalysed_postgres: Engine, seen_by: Visibility,
) -> None:
    """``Observation?code=common&subject=Patient/p7``: the one patient's 100 Observations are found
    first and each is checked for the code, whatever the planner believes of the code's rows; the
    code is written first in the query, so the order of the criteria does not decide it either."""
    rows = seen_by.resources()
    query = parse_query("Observation", [("code", "http://loinc.org|common"), ("subject", "Patient/p7")])
    compiler = Compiler("http://localhost/fhir", seen_by)
    condition = match_condition(rows, {"Observation": query}, compiler)
    read = _token_rows_read(unanalysed_postgres, select(rows.c.pk).where(condition).order_by(rows.c.pk).limit(51))
    assert read <= 100
    # the control: both criteria as lookups, the planner free to start from the code's 4,500 rows
    both_looked_up = and_(*[compiler.criterion(rows, c) for c in query.criteria])
    control = _token_rows_read(unanalysed_postgres, select(rows.c.pk).where(both_looked_up).order_by(rows.c.pk).limit(51))
    assert control >= 4500 or seen_by is not EVERYTHING, control


@pytest.mark.parametrize(("params", "lead"), [
    ([("code", "http://loinc.org|common"), ("subject", "Patient/p7")], "subject"),
    ([("date", "ge2020"), ("code", "x")], "code"),
    ([("value-quantity", "gt5"), ("identifier", "urn:s|1"), ("code", "x")], "identifier"),
    ([("code:text", "heart"), ("date", "ge2020")], "code:text"),  # a tie: the first written leads
])
def test_the_lead_is_picked_by_the_kind_of_parameter(params: list[tuple[str, str]], lead: str) -> None:
    query = parse_query("Observation", params)
    assert min(query.criteria, key=lead_rank).name == lead


# --- the lead counted, whichever way the data are skewed -------------------------------------------

#: Observations of the one popular Patient, and of the code found on almost every Observation.
POPULAR = 1000

#: (parameters, the criterion that matches the popular side): each case has one criterion of
#: ``POPULAR``-odd rows and one of a handful, in both orders of kind.
SKEWED = {
    "popular-patient-rare-code": ([("subject", "Patient/big"), ("code", "http://loinc.org|unique")], "subject"),
    "rare-patient-popular-code": ([("code", "http://loinc.org|common"), ("subject", "Patient/s7")], "code"),
    "popular-code-rare-date": ([("code", "http://loinc.org|common"), ("date", "1999-01-01")], "code"),
    "rare-code-popular-date": ([("date", "ge2000"), ("code", "http://loinc.org|unique")], "date"),
}


def _skewed_items() -> list[NewResource]:
    """One Patient with ``POPULAR`` Observations (one of them of a unique code) and 30 with ten
    each; every Observation but one is of the common code, one (of ``s7``) is dated 1999."""
    def observation(res_id: str, patient: str, code: str, date: str) -> NewResource:
        return NewResource("Observation", res_id, {
            "resourceType": "Observation", "status": "final", "effectiveDateTime": date,
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{patient}"}})
    items = [NewResource("Patient", "big", {"resourceType": "Patient"})]
    items += [observation(f"b{k}", "big", "unique" if k == POPULAR // 2 else "common", "2020-01-01")
              for k in range(POPULAR)]
    for p in range(30):
        items.append(NewResource("Patient", f"s{p}", {"resourceType": "Patient"}))
        items += [observation(f"s{p}-{k}", f"s{p}", "common", "1999-01-01" if (p, k) == (7, 3) else "2021-06-01")
                  for k in range(10)]
    return items


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "postgresql-analysed"])
def skewed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """The skewed data, never analysed (autovacuum off on PostgreSQL; SQLite has no sqlite_stat1),
    and on PostgreSQL also with fresh statistics."""
    generator = database_url_for(request.param.split("-")[0], tmp_path_factory)
    engine = make_engine(next(generator))
    try:
        migrate.upgrade(engine)
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                for table in STATISTICS_TABLES:
                    conn.exec_driver_sql(f'ALTER TABLE "{table}" SET (autovacuum_enabled = false)')
        with Store(engine).writing() as conn:
            repository.create_many(conn, _skewed_items())
        if request.param.endswith("analysed"):
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("ANALYZE")
        yield engine
    finally:
        engine.dispose()
        next(generator, None)


def _index_rows_read(engine: Engine, statement) -> int:  # type: ignore[no-untyped-def]
    """Rows the executed PostgreSQL plan took from the index tables (over all its loops)."""
    compiled = statement.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
    with engine.connect() as conn:
        plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + compiled.string, compiled.params).scalar_one()

    def walk(node: dict) -> int:
        own = node["Actual Rows"] * node["Actual Loops"] if node.get("Relation Name", "").startswith("search_") else 0
        return own + sum(walk(child) for child in node.get("Plans", []))
    return walk(plan[0]["Plan"])


def _sqlite_steps(engine: Engine, run: Callable[[Connection], object]) -> int:
    """SQLite virtual-machine instructions executed by ``run`` (the work done, whatever the plan)."""
    steps = 0

    def tick() -> int:
        nonlocal steps
        steps += 1
        return 0
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        raw.set_progress_handler(tick, 1)
        try:
            run(conn)
        finally:
            raw.set_progress_handler(None, 1)
    return steps


def _work(engine: Engine, params: list[tuple[str, str]], forced: str | None) -> int:
    """The work of the search, lead counting included: index rows read on PostgreSQL, VM
    instructions on SQLite. ``forced``: the criterion made to lead (a
    counter that finds it empty), to show what a wrong lead costs."""
    rows = EVERYTHING.resources()
    query = parse_query("Observation", params)
    compiler = Compiler("http://localhost/fhir", EVERYTHING)

    def run(conn: Connection) -> int:
        counted = 0

        def count(criteria, cap: int) -> list[int]:  # type: ignore[no-untyped-def]
            nonlocal counted
            if forced is not None:
                return [0 if criterion.name == forced else cap for criterion in criteria]
            found = index_counter(conn, compiler.index_lookup)(criteria, cap)
            if engine.dialect.name == "postgresql":  # what the counts read, whatever their plan
                counted += _index_rows_read(engine, count_statement(criteria, cap, compiler.index_lookup))
            return found
        condition = match_condition(rows, {"Observation": query}, compiler, count)
        statement = select(rows.c.pk).where(condition).order_by(rows.c.pk).limit(51)
        if engine.dialect.name == "postgresql":
            return counted + _index_rows_read(engine, statement)
        conn.execute(statement).all()
        return counted
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            return run(conn)
    return _sqlite_steps(engine, run)


@pytest.mark.parametrize("case", sorted(SKEWED))
def test_the_counted_lead_reads_few_rows_whichever_way_the_data_are_skewed(skewed: Engine, case: str) -> None:
    """Never analysed, one criterion matching ``POPULAR`` rows and the other a handful: counting
    finds the handful, whatever its kind, and the whole search (counts included) does a small part
    of the work of the same search led by the popular criterion (the control)."""
    params, popular = SKEWED[case]
    counted = _work(skewed, params, forced=None)
    control = _work(skewed, params, forced=popular)
    assert counted * 5 < control, (counted, control)
    if skewed.dialect.name == "postgresql":  # rows: the first round of counts and a handful of probes
        assert counted <= 2 * FIRST_CAP + 30, counted


@pytest.mark.parametrize(("counts", "lead", "read"), [
    ({"subject": 100_000, "code": 1}, "code", 64 + 64 + 1),  # the popular reference does not lead
    ({"subject": 19, "code": 50_000, "date": 400_000}, "subject", 19),  # the kind's lead is small: no other counted
    ({"subject": 5_000, "code": 900}, "code", 64 + 2 * (64 + 256) + 1024 + 900),  # the cap grows until one fits
    ({"subject": 7, "code": 1}, "subject", 7),  # below the first cap the kind decides
    ({"subject": 10**6, "code": 10**6}, "subject", 64 + 2 * (64 + 256 + 1024 + 4096 + 16_384)),  # giants: the kind
])
def test_the_lead_is_the_criterion_with_the_fewest_rows_counted_up_to_a_cap(
    counts: dict[str, int], lead: str, read: int,
) -> None:
    """``read``: the index rows the counts read in all (each count stops at its cap; the kind's
    lead is counted alone first)."""
    query = parse_query("Observation", [(name, "x" if name != "date" else "ge2020") for name in counts])
    rows: list[int] = []

    def count(criteria, cap: int) -> list[int]:  # type: ignore[no-untyped-def]
        found = [min(counts[criterion.name], cap) for criterion in criteria]
        rows.extend(found)
        return found
    assert pick_lead(query.criteria, count).name == lead
    assert sum(rows) == read, rows
    assert LAST_CAP == 16_384 and FIRST_CAP == 64 and GROWTH == 4  # the figures of ``read``
