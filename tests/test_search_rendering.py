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
