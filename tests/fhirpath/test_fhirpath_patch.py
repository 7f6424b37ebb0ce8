"""FHIRPath Patch (R4 fhirpatch.html): add, insert, delete, replace and move, on their own and over
HTTP on both databases (PATCH with a Parameters body, and inside a transaction); a patch that
does not apply is a 400 naming the operation and changes nothing."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from fhirfus.errors import FhirError
from fhirfus.fhirpath.patch import apply


def operation(kind: str, path: str, **parts: Any) -> dict:
    part: list[dict] = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    for name, value in parts.items():
        if name == "value":
            part.append({"name": "value", **value})
        elif isinstance(value, int):
            part.append({"name": name, "valueInteger": value})
        else:
            part.append({"name": name, "valueString": value})
    return {"name": "operation", "part": part}


def patch(*operations: dict) -> dict:
    return {"resourceType": "Parameters", "parameter": list(operations)}


PATIENT = {"resourceType": "Patient", "id": "p", "active": False, "birthDate": "1970-01-01",
           "name": [{"family": "A", "given": ["X"]}, {"family": "B"}],
           "identifier": [{"system": "urn:a", "value": "1"}, {"system": "urn:b", "value": "2"}]}


def test_add_sets_a_single_element_and_appends_to_a_list() -> None:
    patched = apply(PATIENT, patch(operation("add", "Patient", name="gender", value={"valueCode": "female"}),
                                   operation("add", "Patient.name[0]", name="given", value={"valueString": "Y"}),
                                   operation("add", "Patient", name="telecom",
                                             value={"valueContactPoint": {"system": "phone", "value": "1"}})))
    assert patched["gender"] == "female" and patched["name"][0]["given"] == ["X", "Y"]
    assert patched["telecom"] == [{"system": "phone", "value": "1"}]
    assert PATIENT["name"][0]["given"] == ["X"]  # the original is untouched


def test_add_a_choice_element_by_its_base_name() -> None:
    patched = apply(PATIENT, patch(operation("add", "Patient", name="deceased", value={"valueBoolean": True})))
    assert patched["deceasedBoolean"] is True


def test_insert_at_an_index() -> None:
    patched = apply(PATIENT, patch(operation("insert", "Patient.name", index=1, value={"valueHumanName": {"family": "M"}})))
    assert [n["family"] for n in patched["name"]] == ["A", "M", "B"]


def test_delete_by_where_and_of_what_is_not_there() -> None:
    patched = apply(PATIENT, patch(operation("delete", "Patient.identifier.where(system = 'urn:a')"),
                                   operation("delete", "Patient.gender")))
    assert patched["identifier"] == [{"system": "urn:b", "value": "2"}] and "gender" not in patched


def test_replace_a_value_and_a_list_item() -> None:
    patched = apply(PATIENT, patch(operation("replace", "Patient.birthDate", value={"valueDate": "1980-02-02"}),
                                   operation("replace", "Patient.name.last().family", value={"valueString": "C"}),
                                   operation("replace", "Patient.active", value={"valueBoolean": True})))
    assert patched["birthDate"] == "1980-02-02" and patched["name"][1]["family"] == "C" and patched["active"] is True


def test_move_within_a_list() -> None:
    patched = apply(PATIENT, patch(operation("move", "Patient.identifier", source=0, destination=1)))
    assert [i["value"] for i in patched["identifier"]] == ["2", "1"]


@pytest.mark.parametrize(("op", "element"), [
    (operation("replace", "Patient.name", value={"valueString": "x"}), "Parameters.parameter[0].path"),
    (operation("add", "Patient", name="banana", value={"valueString": "x"}), "Parameters.parameter[0].name"),
    (operation("add", "Patient", name="birthDate", value={"valueDate": "2000"}), "Parameters.parameter[0].name"),
    (operation("explode", "Patient"), "Parameters.parameter[0].type"),
    (operation("replace", "Observation.status", value={"valueCode": "x"}), "Parameters.parameter[0].path"),
    (operation("replace", "Patient.name.select(family)", value={"valueString": "x"}), "Parameters.parameter[0].path"),
    (operation("move", "Patient.identifier", source=5, destination=0), "Parameters.parameter[0].source"),
    (operation("insert", "Patient.name", index=9, value={"valueHumanName": {}}), "Parameters.parameter[0].index"),
    (operation("replace", "Patient.birthDate"), "Parameters.parameter[0].value"),
    (operation("delete", "Patient.name.where(family = )"), "Parameters.parameter[0].path"),
])
def test_a_patch_that_does_not_apply_names_the_operation(op: dict, element: str) -> None:
    with pytest.raises(FhirError) as caught:
        apply(PATIENT, patch(op))
    assert caught.value.status == 400 and caught.value.issues[0].expression == (element,)


def test_over_http_and_in_a_transaction(client: httpx.Client) -> None:
    created = client.post("/Patient", json={"resourceType": "Patient", "name": [{"family": f"P{uuid.uuid4().hex[:6]}"}]})
    pid = created.json()["id"]
    answer = client.patch(f"/Patient/{pid}", json=patch(operation("add", "Patient", name="gender",
                                                                   value={"valueCode": "female"})),
                          headers={"Content-Type": "application/fhir+json"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["gender"] == "female" and answer.json()["meta"]["versionId"] == "2"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "PATCH", "url": f"Patient/{pid}"},
         "resource": patch(operation("replace", "Patient.gender", value={"valueCode": "male"}))}]}
    assert client.post("", json=bundle).status_code == 200
    assert client.get(f"/Patient/{pid}").json()["gender"] == "male"


def test_over_http_a_bad_patch_or_an_invalid_result_changes_nothing(client: httpx.Client) -> None:
    pid = client.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
    bad = client.patch(f"/Patient/{pid}", json=patch(operation("replace", "Patient.gender", value={"valueCode": "x"})),
                       headers={"Content-Type": "application/fhir+json"})
    assert bad.status_code == 400 and bad.json()["issue"][0]["expression"] == ["Parameters.parameter[0].path"]
    invalid = client.patch(f"/Patient/{pid}", json=patch(operation("add", "Patient", name="gender",
                                                                   value={"valueCode": "banana"})),
                           headers={"Content-Type": "application/fhir+json"})
    assert invalid.status_code == 400
    assert client.get(f"/Patient/{pid}").json()["meta"]["versionId"] == "1"


def test_replace_a_choice_element_with_another_type() -> None:
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueString": "7"}
    patched = apply(observation, patch(operation("replace", "Observation.value",
                                                 value={"valueQuantity": {"value": 7, "unit": "score"}})))
    assert "valueString" not in patched and patched["valueQuantity"] == {"value": 7, "unit": "score"}
    same = apply(PATIENT, patch(operation("replace", "Patient.birthDate", value={"valueString": "1990"})))
    assert same["birthDate"] == "1990" and "birthString" not in same
