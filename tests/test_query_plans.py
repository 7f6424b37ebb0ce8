"""On PostgreSQL the main search shapes are answered through indexes, never sequential scans.

A throw-away database is seeded with generated resources and ANALYZEd, so the planner works
from real statistics; for selective criteria (one patient, one identifier, a name prefix) any
sequential scan in the plan means a missing or unusable index (e.g. a prefix LIKE without
``text_pattern_ops``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from conftest import database_url_for
from sqlalchemy import Engine, select

from fhirfus.db import migrate
from fhirfus.db.engine import make_engine
from fhirfus.db.tables import search_reference
from fhirfus.db.visibility import EVERYTHING, SITE_SYSTEM, Visibility
from fhirfus.interactions.search import match_condition
from fhirfus.search.compiler import Compiler
from fhirfus.search.query import parse_query
from fhirfus.store import repository
from fhirfus.store.repository import NewResource, Store

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
