"""History at instance, type and system level, with _since, _count and keyset paging."""

from __future__ import annotations

import httpx


def _make_versions(client: httpx.Client, unique: str, versions: int) -> str:
    created = client.post("/Patient", json={"resourceType": "Patient", "name": [{"family": unique}]}).json()
    for n in range(2, versions + 1):
        client.put(f"/Patient/{created['id']}", json={**created, "name": [{"family": f"{unique}-{n}"}]})
    return created["id"]


def test_instance_history_lists_versions_newest_first(client: httpx.Client, unique: str) -> None:
    pid = _make_versions(client, unique, 3)
    bundle = client.get(f"/Patient/{pid}/_history").json()
    assert bundle["type"] == "history" and bundle["total"] == 3
    assert [e["resource"]["meta"]["versionId"] for e in bundle["entry"]] == ["3", "2", "1"]
    assert [e["request"]["method"] for e in bundle["entry"]] == ["PUT", "PUT", "POST"]


def test_instance_history_includes_deletion(client: httpx.Client, unique: str) -> None:
    pid = _make_versions(client, unique, 1)
    client.delete(f"/Patient/{pid}")
    newest = client.get(f"/Patient/{pid}/_history").json()["entry"][0]
    assert newest["request"]["method"] == "DELETE" and "resource" not in newest


def test_history_pages_with_next_links_cover_every_version(client: httpx.Client, unique: str) -> None:
    pid = _make_versions(client, unique, 7)
    url: str | None = f"/Patient/{pid}/_history?_count=3"
    seen: list[str] = []
    pages = 0
    while url:
        bundle = client.get(url).json()
        seen += [e["resource"]["meta"]["versionId"] for e in bundle["entry"]]
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
        pages += 1
    assert seen == ["7", "6", "5", "4", "3", "2", "1"] and pages == 3


def test_history_paging_does_not_drift_when_data_changes(client: httpx.Client, unique: str) -> None:
    pid = _make_versions(client, unique, 4)
    first = client.get(f"/Patient/{pid}/_history?_count=2").json()
    client.put(f"/Patient/{pid}", json={"resourceType": "Patient", "id": pid})
    next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    second = client.get(next_url).json()
    assert [e["resource"]["meta"]["versionId"] for e in second["entry"]] == ["2", "1"]


def test_history_since_excludes_older_versions(client: httpx.Client, unique: str) -> None:
    pid = _make_versions(client, unique, 2)
    second = client.get(f"/Patient/{pid}/_history/2").json()
    bundle = client.get(f"/Patient/{pid}/_history", params={"_since": second["meta"]["lastUpdated"]}).json()
    assert [e["resource"]["meta"]["versionId"] for e in bundle["entry"]] == ["2"]


def test_type_history_contains_only_that_type(client: httpx.Client, unique: str) -> None:
    _make_versions(client, unique, 1)
    bundle = client.get("/Patient/_history", params={"_count": 5}).json()
    assert bundle["entry"] and all(e["resource"]["resourceType"] == "Patient" for e in bundle["entry"] if "resource" in e)


def test_system_history_contains_latest_write(client: httpx.Client, unique: str) -> None:
    created = client.post(
        "/Organization", json={"resourceType": "Organization", "name": f"Org {unique}"}
    ).json()
    bundle = client.get("/_history", params={"_since": created["meta"]["lastUpdated"]}).json()
    assert any(e.get("resource", {}).get("id") == created["id"] for e in bundle["entry"])


def test_history_of_unknown_resource_is_404(client: httpx.Client, unique: str) -> None:
    assert client.get(f"/Patient/none-{unique}/_history").status_code == 404
