"""``$export`` as the other half of a pull, on both databases: the ``deleted`` array of ``_since``
exports (Bulk Data v2), and ``_elements``."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from urllib.parse import quote

import httpx

from tests.bulk.test_bulk_export import CODES, download, kick_off, manifest_of


def _observation(http: httpx.Client, unique: str, text: str) -> str:
    created = http.post("/Observation", json={
        "resourceType": "Observation", "status": "final", "code": {"coding": [{"system": CODES, "code": unique}],
                                                                    "text": text}})
    assert created.status_code == 201, created.text
    return created.json()["id"]


def _instant() -> str:
    time.sleep(0.05)  # the server's clock ticks past what happened before
    moment = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    time.sleep(0.05)
    return moment


def test_a_since_export_lists_what_was_deleted_since_as_transaction_bundles(client: httpx.Client, unique: str) -> None:
    deleted_before = _observation(client, unique, "deleted before _since")
    assert client.delete(f"/Observation/{deleted_before}").status_code in (200, 204)
    kept, changed, removed = (_observation(client, unique, name) for name in ("kept", "changed", "removed"))
    since = _instant()
    assert client.delete(f"/Observation/{removed}").status_code in (200, 204)
    update = client.get(f"/Observation/{changed}").json() | {"status": "amended"}
    assert client.put(f"/Observation/{changed}", json=update).status_code == 200

    manifest = manifest_of(client, kick_off(client, f"/$export?_type=Observation&_since={quote(since)}"))

    outputs = download(client, manifest["output"])
    assert {r["id"] for r in outputs["Observation"]} >= {changed}
    assert not {r["id"] for r in outputs["Observation"]} & {kept, removed, deleted_before}
    assert all(item["type"] == "Bundle" for item in manifest["deleted"])
    bundles = download(client, manifest["deleted"]).get("Bundle", [])
    assert all(b["type"] == "transaction" for b in bundles)
    deletes = [e["request"] for b in bundles for e in b["entry"]]
    assert all(request["method"] == "DELETE" for request in deletes)
    urls = {request["url"] for request in deletes}
    assert f"Observation/{removed}" in urls
    assert f"Observation/{deleted_before}" not in urls  # deleted before _since: the client knew already
    assert not {url for url in urls if not url.startswith("Observation/")}  # only the exported types


def test_an_export_without_since_has_no_deleted_array(client: httpx.Client, unique: str) -> None:
    _observation(client, unique, "one")
    manifest = manifest_of(client, kick_off(client, "/$export?_type=Observation"))
    assert "deleted" not in manifest


def test_a_deletion_undone_by_a_new_version_is_not_listed(client: httpx.Client, unique: str) -> None:
    again = _observation(client, unique, "back again")
    since = _instant()
    assert client.delete(f"/Observation/{again}").status_code in (200, 204)
    revived = {"resourceType": "Observation", "id": again, "status": "final", "code": {"text": "revived"}}
    assert client.put(f"/Observation/{again}", json=revived).status_code in (200, 201)
    manifest = manifest_of(client, kick_off(client, f"/$export?_type=Observation&_since={quote(since)}"))
    urls = {e["request"]["url"] for b in download(client, manifest["deleted"]).get("Bundle", []) for e in b["entry"]}
    assert f"Observation/{again}" not in urls
    assert again in {r["id"] for r in download(client, manifest["output"])["Observation"]}


def test_elements_keeps_the_named_and_mandatory_elements_and_marks_them_subsetted(
    client: httpx.Client, unique: str,
) -> None:
    patient = client.post("/Patient", json={"resourceType": "Patient", "gender": "female", "birthDate": "1970-01-01",
                                            "name": [{"family": unique}]}).json()
    observation = client.post("/Observation", json={
        "resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{patient['id']}"},
        "code": {"coding": [{"system": CODES, "code": unique}]}, "valueString": "kept out"}).json()
    path = (f"/$export?_type=Patient,Observation&_elements=Patient.gender,subject"
            f"&_typeFilter={quote(f'Patient?family={unique}', safe='')}"
            f"&_typeFilter={quote(f'Observation?code={CODES}|{unique}', safe='')}")
    resources = download(client, manifest_of(client, kick_off(client, path))["output"])
    [exported_patient] = resources["Patient"]
    assert set(exported_patient) == {"resourceType", "id", "meta", "gender"}
    [exported_observation] = resources["Observation"]
    assert exported_observation["id"] == observation["id"]
    assert set(exported_observation) == {"resourceType", "id", "meta", "status", "code", "subject"}  # status, code: 1..1
    for resource in (exported_patient, exported_observation):
        assert {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"} \
            in resource["meta"]["tag"]


def _provenance(http: httpx.Client, target: str) -> str:
    created = http.post("/Provenance", json={
        "resourceType": "Provenance", "target": [{"reference": target}], "recorded": "2026-01-01T00:00:00Z",
        "agent": [{"who": {"display": "a study nurse"}}]})
    assert created.status_code == 201, created.text
    return created.json()["id"]


def test_include_associated_data_adds_the_provenance_of_exported_resources(client: httpx.Client, unique: str) -> None:
    exported = _observation(client, unique, "exported")
    elsewhere = _observation(client, f"other-{unique}", "not exported")
    older = _provenance(client, f"Observation/{exported}")
    time.sleep(0.01)
    newer = _provenance(client, f"Observation/{exported}")
    _provenance(client, f"Observation/{elsewhere}")
    query = f"/$export?_type=Observation&_typeFilter={quote(f'Observation?code={CODES}|{unique}', safe='')}"

    def provenance_ids(value: str) -> list[str]:
        manifest = manifest_of(client, kick_off(client, f"{query}&includeAssociatedData={value}"))
        found = download(client, manifest["output"])
        assert [r["id"] for r in found["Observation"]] == [exported]
        return sorted(r["id"] for r in found.get("Provenance", []))

    assert provenance_ids("RelevantProvenanceResources") == sorted([older, newer])
    assert provenance_ids("LatestProvenanceResources") == [newer]
