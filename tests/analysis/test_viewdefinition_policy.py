"""``$viewdefinition-run`` of the guide's stored views as admin, site client and analyst, on both
databases: the admin sees every site's rows, a site client its own, an analyst only what the
de-identification policy lets out (pseudonyms from the analysis export's crosswalk, day offsets,
age bands) — and a view the policy has no rule for, or one reading a never-read element, is refused
naming the column."""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import re

import httpx
import orjson
import pytest
from conftest import TEST_DEID_KEY
from sqlalchemy import select
from view_world import PSEUDONYM, guide, make_world

from fhirfus.analysis.deid.policy import namespace_for
from fhirfus.db.tables import deid_crosswalk
from fhirfus.ig import folder

AGE_BAND = re.compile(r"^(\d+-\d+|\d+|90\+)$")


def run(http: httpx.Client, **params: object) -> httpx.Response:
    parameters: list[dict] = []
    for name, value in params.items():
        for one in value if isinstance(value, list) else [value]:
            parameters.append({"name": name, "resource": one} if isinstance(one, dict)
                              else {"name": name, "valueString": str(one)})
    return http.post("/$viewdefinition-run", json={"resourceType": "Parameters", "parameter": parameters})


def ndjson(answer: httpx.Response) -> list[dict]:
    assert answer.status_code == 200, answer.text
    return [orjson.loads(line) for line in answer.content.splitlines()]


@pytest.fixture(scope="module")
def world(secure_server, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_world(secure_server, tmp_path_factory)


def test_the_admin_sees_every_sites_rows_and_a_site_client_only_its_own(secure_server, world: dict) -> None:
    sites = world["sites"]
    with world["clients"]["admin"].http(secure_server.base) as admin, \
            world["clients"]["a"].http(secure_server.base) as on_a:
        everything = ndjson(run(admin, viewReference="analysis_patient"))
        mine = ndjson(run(on_a, viewReference="analysis_patient"))
    assert {sites["a"], sites["b"]} <= {row["site"] for row in everything}
    assert sorted(row["patient_key"] for row in mine) == world["ids_a"]
    assert {row["site"] for row in mine} == {sites["a"]}
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", row["birth_date"]) for row in mine)  # raw data, as it is


def test_an_analyst_sees_pseudonyms_of_the_analysis_crosswalk_and_no_raw_ids(secure_server, world: dict) -> None:
    with world["clients"]["analyst"].http(secure_server.base) as analyst:
        rows = ndjson(run(analyst, viewReference="analysis_patient", group=world["group"]))
    assert len(rows) == 3
    assert all(PSEUDONYM.match(row["patient_key"]) for row in rows)
    assert all(AGE_BAND.match(row["birth_date"]) for row in rows if row["birth_date"] is not None)
    text = orjson.dumps(rows).decode()
    assert not any(raw in text for raw in world["ids_a"])
    with world["store"].reading() as conn:
        crosswalk = dict(conn.execute(select(deid_crosswalk.c.patient_id, deid_crosswalk.c.pseudonym).where(
            deid_crosswalk.c.namespace == namespace_for(TEST_DEID_KEY),
            deid_crosswalk.c.patient_id.in_(world["ids_a"]))).all())
    assert sorted(row["patient_key"] for row in rows) == sorted(crosswalk.values())


def test_an_admin_who_asks_for_a_policy_gets_what_an_analyst_would(secure_server, world: dict) -> None:
    with world["clients"]["admin"].http(secure_server.base) as admin, \
            world["clients"]["analyst"].http(secure_server.base) as analyst:
        asked = run(admin, viewReference="analysis_patient", group=world["group"], policy="safe-harbor")
        theirs = run(analyst, viewReference="analysis_patient", group=world["group"])
    assert sorted(orjson.dumps(r) for r in ndjson(asked)) == sorted(orjson.dumps(r) for r in ndjson(theirs))
    sha256 = hashlib.sha256((folder("policies") / "safe-harbor.yaml").read_bytes()).hexdigest()
    assert asked.headers["X-Deidentification-Policy"] == theirs.headers["X-Deidentification-Policy"] \
        == f"safe-harbor; sha256={sha256}"


def test_an_analysts_dates_are_day_offsets_from_the_first_session(secure_server, world: dict) -> None:
    with world["clients"]["analyst"].http(secure_server.base) as analyst:
        sessions = ndjson(run(analyst, viewReference="https://fhirfus.org/fhir/ViewDefinition/analysis-procedure",
                              group=world["group"]))
        scores = ndjson(run(analyst, viewReference="analysis_twstrs_score", group=world["group"]))
    assert sessions and scores
    for row in sessions:
        assert isinstance(row["performed"], int) and isinstance(row["procedure_key"], int)
        assert PSEUDONYM.match(row["patient_key"])
    first = {}
    for row in sessions:
        first[row["patient_key"]] = min(first.get(row["patient_key"], row["performed"]), row["performed"])
    assert set(first.values()) == {0}  # day zero is each patient's first session
    assert all(row["effective"] is None or isinstance(row["effective"], int) for row in scores)
    assert any(isinstance(row["effective"], int) and row["effective"] < 0 for row in scores)  # baseline before


def test_an_analysts_csv_has_the_released_columns_only(secure_server, world: dict) -> None:
    with world["clients"]["analyst"].http(secure_server.base) as analyst:
        answer = run(analyst, viewReference="analysis_patient", group=world["group"], _format="csv",
                     policy="safe-harbor-pooled")
    assert answer.status_code == 200, answer.text
    table = list(csv.reader(io.StringIO(answer.text)))
    assert table[0] == ["patient_key", "gender", "birth_date"]  # the pooled policy drops site, state, postal code
    assert len(table) == 4


def refused(answer: httpx.Response, status: int, column: str, words: str) -> None:
    assert answer.status_code == status, answer.text
    issue = answer.json()["issue"][0]
    assert issue["expression"] == [column], issue
    assert column in issue["diagnostics"] and words in issue["diagnostics"], issue


def test_an_inline_view_without_rules_is_refused_naming_its_column(secure_server, world: dict) -> None:
    inline = {"resourceType": "ViewDefinition", "name": "mine", "resource": "Patient", "status": "active",
              "select": [{"column": [{"name": "sex", "path": "gender", "type": "code"}]}]}
    with world["clients"]["analyst"].http(secure_server.base) as analyst:
        refused(run(analyst, viewResource=inline), 422, "sex", "has no rule")


def test_a_column_reading_the_patients_name_is_refused_whatever_its_view(secure_server, world: dict) -> None:
    reads_name = copy.deepcopy(guide("analysis_patient"))
    reads_name["select"][0]["column"][2] = {"name": "gender", "path": "name.family.first()", "type": "string"}
    with world["clients"]["analyst"].http(secure_server.base) as analyst:
        refused(run(analyst, viewResource=reads_name), 422, "gender", "reads name, which never leaves")


def test_a_guide_views_rules_hold_for_an_identical_copy_only(secure_server, world: dict) -> None:
    copied = guide("analysis_patient")
    tampered = copy.deepcopy(copied)
    tampered["select"][0]["column"][1]["path"] = "id"  # "site" would let the raw server id out
    with world["clients"]["analyst"].http(secure_server.base) as analyst:
        assert len(ndjson(run(analyst, viewResource=copied, group=world["group"]))) == 3
        refused(run(analyst, viewResource=tampered, group=world["group"]), 422, "patient_key", "has no rule")


def test_an_analyst_names_cohorts_not_patients(secure_server, world: dict) -> None:
    with world["clients"]["analyst"].http(secure_server.base) as analyst:
        answer = run(analyst, viewReference="analysis_patient", patient=world["ids_a"][0])
        assert answer.status_code == 403, answer.text
        assert answer.json()["issue"][0]["expression"] == ["patient"]
        assert run(analyst, viewReference="analysis_patient", policy="nope").status_code == 400
