"""Composite search parameters: every component matched within the same element."""

from __future__ import annotations

import httpx
import pytest
from rest_helpers import create, entry_ids

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SYSTOLIC, DIASTOLIC = "8480-6", "8462-4"


def blood_pressure(system: str, systolic: float, diastolic: float) -> dict:
    """A panel whose components carry the codes (under a per-test system) and the values."""
    def component(code: str, value: float) -> dict:
        return {"code": {"coding": [{"system": system, "code": code}]},
                "valueQuantity": {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}}
    return {
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": system, "code": "85354-9"}]},
        "component": [component(SYSTOLIC, systolic), component(DIASTOLIC, diastolic)],
    }


def observation(system: str, code: str, **value: object) -> dict:
    return {"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": system, "code": code}]},
            **value}


def ids(client: httpx.Client, **params: str) -> set[str]:
    return set(entry_ids(client, "/Observation", **params))


def test_component_code_value_quantity_pairs_values_with_their_own_code(client: httpx.Client, unique: str) -> None:
    system = f"urn:bp:{unique}"
    high = create(client, blood_pressure(system, 150, 95))
    normal = create(client, blood_pressure(system, 118, 76))
    # The systolic of `high` is 150 and its diastolic 95 (< 100): a search that paired any code with
    # any value of the resource would wrongly find `high` here.
    assert ids(client, **{"component-code-value-quantity": f"{system}|{SYSTOLIC}$lt100"}) == set()
    assert ids(client, **{"component-code-value-quantity": f"{system}|{SYSTOLIC}$gt140"}) == {high}
    assert ids(client, **{"component-code-value-quantity": f"{system}|{DIASTOLIC}$lt80"}) == {normal}


def test_code_value_quantity_with_unit_and_prefixes(client: httpx.Client, unique: str) -> None:
    system = f"urn:lab:{unique}"
    low = create(client, observation(system, "glucose", valueQuantity={"value": 4.2, "unit": "mmol/L", "system": UCUM,
                                                                          "code": "mmol/L"}))
    high = create(client, observation(system, "glucose", valueQuantity={"value": 9.8, "unit": "mmol/L", "system": UCUM,
                                                                           "code": "mmol/L"}))
    assert ids(client, **{"code-value-quantity": f"{system}|glucose$ge5"}) == {high}
    assert ids(client, **{"code-value-quantity": f"{system}|glucose$4.2|{UCUM}|mmol/L"}) == {low}
    assert ids(client, **{"code-value-quantity": f"{system}|glucose$4.2|{UCUM}|mg/dL"}) == set()
    assert ids(client, **{"code-value-quantity": f"{system}|glucose$lt5,{system}|glucose$gt9"}) == {low, high}


def test_combo_code_value_quantity_covers_the_observation_and_its_components(client: httpx.Client, unique: str) -> None:
    system = f"urn:combo:{unique}"
    panel = create(client, blood_pressure(system, 150, 95))
    single = create(client, observation(system, SYSTOLIC, valueQuantity={"value": 160, "system": UCUM, "code": "mm[Hg]"}))
    assert ids(client, **{"combo-code-value-quantity": f"{system}|{SYSTOLIC}$gt145"}) == {panel, single}
    assert ids(client, **{"code-value-quantity": f"{system}|{SYSTOLIC}$gt145"}) == {single}


def test_code_value_concept_date_and_string(client: httpx.Client, unique: str) -> None:
    system = f"urn:kinds:{unique}"
    concept = create(client, observation(system, "smoking", valueCodeableConcept={
        "coding": [{"system": "http://snomed.info/sct", "code": "8517006"}]}))
    when = create(client, observation(system, "onset", valueDateTime="2024-03-15"))
    text = create(client, observation(system, "note", valueString="Head turned to the left"))
    assert ids(client, **{"code-value-concept": f"{system}|smoking$http://snomed.info/sct|8517006"}) == {concept}
    assert ids(client, **{"code-value-concept": f"{system}|smoking$http://snomed.info/sct|266919005"}) == set()
    assert ids(client, **{"code-value-date": f"{system}|onset$2024-03"}) == {when}
    assert ids(client, **{"code-value-date": f"{system}|onset$gt2024-04"}) == set()
    assert ids(client, **{"code-value-string": f"{system}|note$head turned"}) == {text}


def test_escaped_dollar_is_part_of_the_component(client: httpx.Client, unique: str) -> None:
    system = f"urn:dollar:{unique}"
    created = create(client, observation(system, "a$b", valueString="x"))
    assert ids(client, **{"code-value-string": f"{system}|a\\$b$x"}) == {created}


def test_composite_missing_modifier(client: httpx.Client, unique: str) -> None:
    system = f"urn:missing:{unique}"
    with_value = create(client, observation(system, "m", valueQuantity={"value": 1}))
    without = create(client, observation(system, "m"))
    found = ids(client, code=f"{system}|m", **{"code-value-quantity:missing": "true"})
    assert found == {without}
    assert ids(client, code=f"{system}|m", **{"code-value-quantity:missing": "false"}) == {with_value}


@pytest.mark.parametrize("value", ["urn:x|a", "urn:x|a$1$2", "urn:x|a$banana"])
def test_wrong_component_count_or_value_is_a_400_naming_the_parameter(client: httpx.Client, value: str) -> None:
    response = client.get("/Observation", params={"code-value-quantity": value})
    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "code-value-quantity" in outcome["issue"][0]["expression"][0]


def test_composite_in_a_chain(client: httpx.Client, unique: str) -> None:
    system = f"urn:chain:{unique}"
    observation_id = create(client, observation(system, "tw", valueQuantity={"value": 22}))
    report = client.post("/DiagnosticReport", json={
        "resourceType": "DiagnosticReport", "status": "final", "code": {"text": "TWSTRS"},
        "result": [{"reference": f"Observation/{observation_id}"}]}).json()
    found = client.get("/DiagnosticReport", params={"result.code-value-quantity": f"{system}|tw$gt20"}).json()
    assert [e["resource"]["id"] for e in found.get("entry", [])] == [report["id"]]
    none = client.get("/DiagnosticReport", params={"result.code-value-quantity": f"{system}|tw$lt20"}).json()
    assert none.get("entry", []) == []
