"""The fhirfus implementation guide enforced on write, TWSTRS scores derived on ingest, $extract.

The response used (see tests/domain/test_twstrs_scoring.py for the arithmetic): severity 23,
disability 15, pain 10, total 48.
"""

from __future__ import annotations

import copy

import httpx
import pytest

from tests.domain.test_twstrs_scoring import nested

TWSTRS = "https://fhirfus.org/fhir/CodeSystem/twstrs"
SONICATION = "https://fhirfus.org/fhir/CodeSystem/sonication-parameter"


@pytest.fixture
def patient_id(client: httpx.Client) -> str:
    return client.post("/Patient", json={"resourceType": "Patient"}).json()["id"]


def response_for(patient_id: str) -> dict:
    qr = nested()
    qr["subject"] = {"reference": f"Patient/{patient_id}"}
    return qr


def scores(client: httpx.Client, qr_id: str) -> dict[str, float]:
    bundle = client.get("/Observation", params={"derived-from": f"QuestionnaireResponse/{qr_id}"}).json()
    return {
        e["resource"]["code"]["coding"][0]["code"]: e["resource"]["valueQuantity"]["value"]
        for e in bundle.get("entry", [])
    }


def set_answer(qr: dict, link_id: str, value: int | None) -> dict:
    changed = copy.deepcopy(qr)
    for group in changed["item"]:
        for item in list(group["item"]):
            if item["linkId"] == link_id:
                if value is None:
                    group["item"].remove(item)
                else:
                    item["answer"] = [{"valueInteger": value}]
    return changed


def test_stored_twstrs_response_gets_its_score_observations(client: httpx.Client, patient_id: str) -> None:
    qr = client.post("/QuestionnaireResponse", json=response_for(patient_id)).json()
    assert scores(client, qr["id"]) == {"total": 48, "severity": 23, "disability": 15, "pain": 10}
    total = client.get(f"/Observation?derived-from=QuestionnaireResponse/{qr['id']}&code={TWSTRS}|total").json()
    observation = total["entry"][0]["resource"]
    assert observation["subject"]["reference"] == f"Patient/{patient_id}"
    assert observation["effectiveDateTime"] == qr["authored"]
    assert observation["valueQuantity"]["code"] == "{score}"


def test_updating_the_response_updates_its_scores(client: httpx.Client, patient_id: str) -> None:
    qr = client.post("/QuestionnaireResponse", json=response_for(patient_id)).json()
    client.put(f"/QuestionnaireResponse/{qr['id']}", json=set_answer(qr, "disability.work", 5))
    assert scores(client, qr["id"]) == {"total": 50, "severity": 23, "disability": 17, "pain": 10}


def test_incomplete_subscale_loses_its_score_and_the_total(client: httpx.Client, patient_id: str) -> None:
    qr = client.post("/QuestionnaireResponse", json=response_for(patient_id)).json()
    client.put(f"/QuestionnaireResponse/{qr['id']}", json=set_answer(qr, "pain.best", None))
    assert scores(client, qr["id"]) == {"severity": 23, "disability": 15}


def test_deleting_the_response_deletes_its_scores(client: httpx.Client, patient_id: str) -> None:
    qr = client.post("/QuestionnaireResponse", json=response_for(patient_id)).json()
    client.delete(f"/QuestionnaireResponse/{qr['id']}")
    assert scores(client, qr["id"]) == {}


def test_out_of_range_answer_is_422_naming_the_link_id_and_writes_nothing(
    client: httpx.Client, server, patient_id: str
) -> None:
    before = server.database.counts()
    response = client.post("/QuestionnaireResponse", json=set_answer(response_for(patient_id), "severity.rotation", 7))
    assert response.status_code == 422
    assert "severity.rotation" in response.json()["issue"][0]["diagnostics"]
    assert response.json()["issue"][0]["expression"][0].startswith("QuestionnaireResponse.item")
    assert server.database.counts() == before


def test_twstrs_response_in_a_transaction_is_scored_with_resolved_subject(client: httpx.Client) -> None:
    qr = nested()
    qr["subject"] = {"reference": "urn:uuid:11111111-2222-3333-4444-555555555555"}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:11111111-2222-3333-4444-555555555555", "resource": {"resourceType": "Patient"},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": qr, "request": {"method": "POST", "url": "QuestionnaireResponse"}},
    ]}
    result = client.post("/", json=bundle).json()
    patient = result["entry"][0]["response"]["location"].split("/")[1]
    qr_id = result["entry"][1]["response"]["location"].split("/")[1]
    assert scores(client, qr_id)["total"] == 48
    assert client.get(f"/Observation?subject=Patient/{patient}&code={TWSTRS}|total").json()["total"] == 1


def test_extract_returns_score_observations_without_storing(client: httpx.Client, server, patient_id: str) -> None:
    before = server.database.counts()
    parameters = {"resourceType": "Parameters",
                  "parameter": [{"name": "questionnaire-response", "resource": response_for(patient_id)}]}
    response = client.post("/QuestionnaireResponse/$extract", json=parameters)
    assert response.status_code == 200
    values = {e["resource"]["code"]["coding"][0]["code"]: e["resource"]["valueQuantity"]["value"]
              for e in response.json()["entry"]}
    assert values == {"total": 48, "severity": 23, "disability": 15, "pain": 10}
    assert server.database.counts() == before


def test_extract_of_invalid_response_is_422(client: httpx.Client, patient_id: str) -> None:
    bad = set_answer(response_for(patient_id), "pain.usual", 11)
    response = client.post("/QuestionnaireResponse/$extract", json=bad)
    assert response.status_code == 422
    assert "pain.usual" in response.json()["issue"][0]["diagnostics"]


def mrgfus(patient_id: str, target: str) -> dict:
    return {
        "resourceType": "Procedure", "status": "completed", "subject": {"reference": f"Patient/{patient_id}"},
        "code": {"coding": [{"system": "https://fhirfus.org/fhir/CodeSystem/procedure", "code": "mrgfus-ablation"}]},
        "performedDateTime": "2022-03-15",
        "bodySite": [{"coding": [{"system": "https://fhirfus.org/fhir/CodeSystem/mrgfus-target", "code": target}]}],
    }


def test_mrgfus_procedure_with_known_target_is_stored(client: httpx.Client, patient_id: str) -> None:
    response = client.post("/Procedure", json=mrgfus(patient_id, "vo-complex"))
    assert response.status_code == 201
    found = client.get("/Procedure", params={"target": "https://fhirfus.org/fhir/CodeSystem/mrgfus-target|vo-complex",
                                             "subject": f"Patient/{patient_id}"}).json()
    assert found["total"] == 1


def test_mrgfus_procedure_with_unknown_target_is_422(client: httpx.Client, patient_id: str) -> None:
    response = client.post("/Procedure", json=mrgfus(patient_id, "stn"))
    assert response.status_code == 422
    assert response.json()["issue"][0]["expression"] == ["Procedure.bodySite[0].coding[0].code"]


def sdr(value: float) -> dict:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": SONICATION, "code": "skull-density-ratio"}]},
            "valueQuantity": {"value": value, "unit": "1", "system": "http://unitsofmeasure.org", "code": "1"}}


def test_impossible_skull_density_ratio_is_422(client: httpx.Client) -> None:
    response = client.post("/Observation", json=sdr(1.4))
    assert response.status_code == 422
    assert response.json()["issue"][0]["expression"] == ["Observation.valueQuantity.value"]


def test_low_skull_density_ratio_is_accepted_with_a_warning(client: httpx.Client) -> None:
    assert client.post("/Observation", json=sdr(0.31)).status_code == 201
    issues = client.post("/Observation/$validate", json=sdr(0.31)).json()["issue"]
    assert [i["severity"] for i in issues if i["code"] != "invariant"] == ["warning"]  # dom-6 warns too


def put_transaction(*resources: dict) -> dict:
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources]}


def test_a_response_whose_score_ids_were_used_before_gets_its_scores_in_a_transaction(
    client: httpx.Client, patient_id: str, unique: str
) -> None:
    qr = {**response_for(patient_id), "id": f"qr-{unique}"}
    used = {"resourceType": "Observation", "id": f"qr-{unique}-total", "status": "final", "code": {"text": "x"}}
    assert client.put(f"/Observation/{used['id']}", json=used).status_code == 201
    assert client.delete(f"/Observation/{used['id']}").status_code in (200, 204)  # a tombstone keeps the id
    answer = client.post("/", json=put_transaction(qr))
    assert answer.status_code == 200, answer.text
    assert scores(client, qr["id"]) == {"total": 48, "severity": 23, "disability": 15, "pain": 10}


def test_an_entry_with_the_id_of_a_score_observation_is_overwritten_by_the_score(
    client: httpx.Client, patient_id: str, unique: str
) -> None:
    qr = {**response_for(patient_id), "id": f"qr-{unique}"}
    claimed = {"resourceType": "Observation", "id": f"qr-{unique}-total", "status": "final",
               "code": {"text": "not a score"}}
    answer = client.post("/", json=put_transaction(claimed, qr))
    assert answer.status_code == 200, answer.text
    assert scores(client, qr["id"])["total"] == 48
