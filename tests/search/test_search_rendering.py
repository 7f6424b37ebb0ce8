"""Search answers write the stored JSON of each match as it is (``orjson.Fragment``); ``_pretty``,
``_elements`` and ``_summary`` answers are built from the parsed resource. Both give the same data."""

from __future__ import annotations

import httpx


def test_a_search_answer_holds_the_same_resources_pretty_or_not(client: httpx.Client, unique: str) -> None:
    tag = {"system": f"urn:render:{unique}", "code": "x"}
    for n in range(3):
        created = client.post("/Observation", json={
            "resourceType": "Observation", "status": "final", "meta": {"tag": [tag]}, "code": {"text": f"n{n}"},
            "valueQuantity": {"value": 1.25 + n, "unit": "mg"}, "note": [{"text": "ünïcödé \"quoted\" \\ slash"}]})
        assert created.status_code == 201, created.text
    params = {"_tag": f"{tag['system']}|x"}
    compact = client.get("/Observation", params=params)
    pretty = client.get("/Observation", params={**params, "_pretty": "true"})
    assert compact.status_code == pretty.status_code == 200
    assert b"\n  " in pretty.content and b"\n" not in compact.content.strip()
    assert compact.json()["entry"] == pretty.json()["entry"]
    for entry in compact.json()["entry"]:
        read = client.get(f"/Observation/{entry['resource']['id']}").json()
        assert entry["resource"] == read


def test_elements_are_applied_to_the_stored_json(client: httpx.Client, unique: str) -> None:
    created = client.post("/Patient", json={"resourceType": "Patient", "gender": "female",
                                            "name": [{"family": f"Render{unique}"}]}).json()
    answer = client.get("/Patient", params={"_id": created["id"], "_elements": "gender"}).json()
    resource = answer["entry"][0]["resource"]
    assert resource["gender"] == "female" and "name" not in resource


def test_included_resources_are_the_same_pretty_or_not(client: httpx.Client, unique: str) -> None:
    patient = client.post("/Patient", json={"resourceType": "Patient", "name": [{"family": f"Inc{unique}"}]}).json()
    for n in range(2):
        assert client.post("/Observation", json={
            "resourceType": "Observation", "status": "final", "code": {"text": f"é{n}"},
            "subject": {"reference": f"Patient/{patient['id']}"}}).status_code == 201
    params = {"_id": patient["id"], "_revinclude": "Observation:subject"}
    compact = client.get("/Patient", params=params).json()
    pretty = client.get("/Patient", params={**params, "_pretty": "true"}).json()
    included = [e for e in compact["entry"] if e["search"]["mode"] == "include"]
    assert len(included) == 2 and all(e["resource"]["resourceType"] == "Observation" for e in included)
    key = lambda e: e["fullUrl"]  # noqa: E731 - include order is not part of the answer
    assert sorted(compact["entry"], key=key) == sorted(pretty["entry"], key=key)


def test_everything_answers_the_same_resources_pretty_or_not(client: httpx.Client, unique: str) -> None:
    patient = client.post("/Patient", json={"resourceType": "Patient", "name": [{"family": f"All{unique}"}]}).json()
    assert client.post("/Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": "ø"},
                                             "subject": {"reference": f"Patient/{patient['id']}"}}).status_code == 201
    compact = client.get(f"/Patient/{patient['id']}/$everything").json()
    pretty = client.get(f"/Patient/{patient['id']}/$everything", params={"_pretty": "true"}).json()
    assert len(compact["entry"]) == 2 and compact["entry"] == pretty["entry"]
    assert compact["entry"][0]["resource"] == client.get(f"/Patient/{patient['id']}").json()
