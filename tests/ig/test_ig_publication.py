"""The server publishes what it enforces: the guide's Questionnaire, profiles, terminology and search
parameters, with an ImplementationGuide listing them, are readable and searchable on every server
from its first start, by every caller; no client changes or deletes them; a changed guide file is
a new version at the next start."""

from __future__ import annotations

import copy
import uuid

import httpx
import pytest
from auth_helpers import make_client
from fhirpy import SyncFHIRClient

from fhirfus.auth.clients import register
from fhirfus.domain.publication import guide_resources, publish
from fhirfus.errors import InvalidRequest
from fhirfus.store.repository import Store

TWSTRS = "https://fhirfus.org/fhir/Questionnaire/twstrs"
KINDS = ("Questionnaire", "StructureDefinition", "ValueSet", "CodeSystem", "ConceptMap", "SearchParameter",
         "ImplementationGuide")


def total(client: httpx.Client, path: str, **params: str) -> int:
    answer = client.get(path, params={**params, "_summary": "count"})
    assert answer.status_code == 200, answer.text
    return int(answer.json()["total"])


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_guide_resource_is_searchable(client: httpx.Client, kind: str) -> None:
    expected = sum(1 for r in guide_resources() if r["resourceType"] == kind)
    assert expected >= 1
    assert total(client, f"/{kind}", _security="https://fhirfus.org/fhir/CodeSystem/site|*") == expected


def test_the_questionnaire_is_found_by_canonical_url_version_name_and_status(client: httpx.Client) -> None:
    assert total(client, "/Questionnaire", url=TWSTRS) == 1
    assert total(client, "/Questionnaire", url=f"{TWSTRS}|1994") == 1
    assert total(client, "/Questionnaire", url=f"{TWSTRS}|2000") == 0
    assert total(client, "/Questionnaire", name="TWSTRS", status="active") >= 1
    assert client.get("/Questionnaire/twstrs-1994").json()["url"] == TWSTRS


def test_the_implementation_guide_lists_every_published_resource(client: httpx.Client) -> None:
    guide = client.get("/ImplementationGuide/fhirfus").json()
    listed = {r["reference"]["reference"] for r in guide["definition"]["resource"]}
    published = {f"{r['resourceType']}/{r['id']}" for r in guide_resources() if r["resourceType"] != "ImplementationGuide"}
    assert listed == published
    for reference in listed:
        assert client.get(f"/{reference}").status_code == 200, reference


def test_a_client_fetches_the_twstrs_form_by_canonical_url_and_fills_it(server) -> None:
    fhir = SyncFHIRClient(server.base)
    questionnaire = fhir.resources("Questionnaire").search(url=TWSTRS).first()
    assert questionnaire is not None
    patient = fhir.resource("Patient", name=[{"family": f"Form{uuid.uuid4().hex[:6]}"}])
    patient.save()

    def answered(items: list[dict]) -> list[dict]:
        out = []
        for item in items:
            if item["type"] == "group":
                out.append({"linkId": item["linkId"], "item": answered(item.get("item", []))})
            elif item["type"] in ("integer", "choice", "decimal") and item.get("answerOption"):
                option = item["answerOption"][0]
                value = {k: v for k, v in option.items() if k.startswith("value")}
                out.append({"linkId": item["linkId"], "answer": [value]})
            elif item["type"] == "integer":
                out.append({"linkId": item["linkId"], "answer": [{"valueInteger": 0}]})
        return out

    response = fhir.resource("QuestionnaireResponse", status="completed", questionnaire=TWSTRS,
                             subject={"reference": f"Patient/{patient.id}"}, authored="2025-01-01",
                             item=answered(questionnaire["item"]))
    response.save()
    assert response.id


@pytest.mark.parametrize("write", ["put", "patch", "delete", "transaction-put", "transaction-delete", "label"])
def test_no_client_changes_or_deletes_a_published_resource(client: httpx.Client, write: str) -> None:
    path = "/CodeSystem/cd-subtype"
    before = client.get(path).json()
    changed = {**copy.deepcopy(before), "title": "changed by a client"}
    if write == "put":
        answer = client.put(path, json=changed)
    elif write == "patch":
        answer = client.patch(path, json=[{"op": "replace", "path": "/title", "value": "x"}],
                              headers={"Content-Type": "application/json-patch+json"})
    elif write == "delete":
        answer = client.delete(path)
    elif write == "label":
        unsaved = {k: v for k, v in changed.items() if k != "id"}  # null is not JSON FHIR: the id is left out
        answer = client.post("/CodeSystem", json={**unsaved, "url": f"urn:test:{uuid.uuid4()}"})
    else:
        method = "PUT" if write == "transaction-put" else "DELETE"
        entry = {"request": {"method": method, "url": "CodeSystem/cd-subtype"}}
        if method == "PUT":
            entry["resource"] = changed
        answer = client.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": [entry]})
    assert answer.status_code == 403, answer.text
    assert client.get(path).json() == before


def test_publishing_again_changes_only_what_changed(database) -> None:
    store = Store(database.engine)
    publish(store)
    again = publish(store)
    assert again.created == [] and again.updated == []
    resources = guide_resources()
    edited = next(r for r in resources if r["resourceType"] == "ValueSet")
    edited["description"] = f"edited {uuid.uuid4()}"
    report = publish(store, resources)
    assert report.updated == [f"ValueSet/{edited['id']}"]
    publish(store)  # and back


def test_a_site_client_reads_published_resources_but_cannot_change_them(secure_server) -> None:
    store = Store(secure_server.database.engine)
    site = make_client(store, secure_server.root + "/auth/token", role="site", site=f"S{uuid.uuid4().hex[:6]}",
                       scope="system/*.cruds")
    with site.http(secure_server.base) as http:
        assert http.get("/Questionnaire", params={"url": TWSTRS}).json()["total"] == 1
        assert http.get("/ImplementationGuide/fhirfus").status_code == 200
        assert http.put("/ValueSet/cd-subtype", json=http.get("/ValueSet/cd-subtype").json()).status_code == 403


def test_no_client_may_be_registered_for_the_published_owner(database) -> None:
    with pytest.raises(InvalidRequest):
        register(Store(database.engine), "x", "site", "system/*.r", {"keys": []}, "*")


def test_the_capability_statement_names_the_guide_its_profiles_and_its_search_parameters(client: httpx.Client) -> None:
    statement = client.get("/metadata").json()
    assert statement["implementationGuide"] == ["https://fhirfus.org/fhir/ImplementationGuide/fhirfus"]
    by_type = {entry["type"]: entry for entry in statement["rest"][0]["resource"]}
    profiles = {url for entry in by_type.values() for url in entry.get("supportedProfile", [])}
    published = {r["url"] for r in guide_resources() if r["resourceType"] == "StructureDefinition"
                 and r.get("kind") == "resource"}
    assert published <= profiles
    target = next(p for p in by_type["Procedure"]["searchParam"] if p["name"] == "target")
    assert target["definition"] == "https://fhirfus.org/fhir/SearchParameter/procedure-target"
    assert client.get("/SearchParameter", params={"url": target["definition"]}).json()["total"] == 1
