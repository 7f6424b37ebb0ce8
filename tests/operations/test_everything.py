"""Patient/$everything returns the patient compartment, with _type, _since and paging."""

from __future__ import annotations

import httpx


def _record(client: httpx.Client, unique: str) -> tuple[str, set[str]]:
    patient = client.post("/Patient", json={"resourceType": "Patient", "name": [{"family": unique}]}).json()
    other = client.post("/Patient", json={"resourceType": "Patient"}).json()
    ref = {"reference": f"Patient/{patient['id']}"}
    ids = {f"Patient/{patient['id']}"}
    for n in range(3):
        obs = client.post("/Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": str(n)}, "subject": ref}).json()
        ids.add(f"Observation/{obs['id']}")
    cond = client.post("/Condition", json={"resourceType": "Condition", "subject": ref}).json()
    ids.add(f"Condition/{cond['id']}")
    client.post("/Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                      "subject": {"reference": f"Patient/{other['id']}"}})
    return patient["id"], ids


def _collect(client: httpx.Client, url: str) -> list[str]:
    found: list[str] = []
    next_url: str | None = url
    while next_url:
        bundle = client.get(next_url).json()
        found += [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])]
        next_url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    return found


def test_everything_returns_exactly_the_compartment(client: httpx.Client, unique: str) -> None:
    pid, expected = _record(client, unique)
    assert set(_collect(client, f"/Patient/{pid}/$everything")) == expected


def test_everything_pages_without_loss_or_duplicates(client: httpx.Client, unique: str) -> None:
    pid, expected = _record(client, unique)
    found = _collect(client, f"/Patient/{pid}/$everything?_count=2")
    assert sorted(found) == sorted(expected)


def test_everything_type_filter(client: httpx.Client, unique: str) -> None:
    pid, expected = _record(client, unique)
    found = set(_collect(client, f"/Patient/{pid}/$everything?_type=Condition"))
    assert found == {i for i in expected if i.startswith("Condition/")}


def test_everything_since_filter(client: httpx.Client, unique: str) -> None:
    pid, _ = _record(client, unique)
    late = client.post("/Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": "late"},
                                             "subject": {"reference": f"Patient/{pid}"}}).json()
    found = _collect(client, f"/Patient/{pid}/$everything?_since={late['meta']['lastUpdated']}")
    assert found == [f"Observation/{late['id']}"]


def test_everything_of_unknown_patient_is_404(client: httpx.Client, unique: str) -> None:
    assert client.get(f"/Patient/none-{unique}/$everything").status_code == 404
