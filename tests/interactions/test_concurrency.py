"""Concurrent writers never lose an update or duplicate a version."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

WRITERS = 8
CYCLES = 10


def _read_modify_write(base: str, pid: str, writer: int) -> int:
    """Ten If-Match cycles, each appending this writer's mark; 412 means re-read and retry."""
    conflicts = 0
    with httpx.Client(base_url=base, timeout=60) as client:
        done = 0
        while done < CYCLES:
            current = client.get(f"/Patient/{pid}")
            resource = current.json()
            marks = list(resource.get("identifier", []))
            marks.append({"system": "urn:writer", "value": f"{writer}-{done}"})
            response = client.put(
                f"/Patient/{pid}", json={**resource, "identifier": marks}, headers={"If-Match": current.headers["ETag"]}
            )
            if response.status_code == 412:
                conflicts += 1
                continue
            assert response.status_code == 200, response.text
            done += 1
    return conflicts


def test_concurrent_if_match_writers_lose_nothing(server, client: httpx.Client) -> None:
    pid = client.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(lambda w: _read_modify_write(server.base, pid, w), range(WRITERS)))
    final = client.get(f"/Patient/{pid}").json()
    assert final["meta"]["versionId"] == str(WRITERS * CYCLES + 1)
    marks = sorted(i["value"] for i in final["identifier"])
    assert marks == sorted(f"{w}-{c}" for w in range(WRITERS) for c in range(CYCLES))
    history = client.get(f"/Patient/{pid}/_history", params={"_count": 200}).json()
    assert [int(e["resource"]["meta"]["versionId"]) for e in history["entry"]] == list(range(81, 0, -1))


def test_concurrent_blind_updates_get_distinct_versions(server, client: httpx.Client) -> None:
    pid = client.post("/Patient", json={"resourceType": "Patient"}).json()["id"]

    def write(n: int) -> str:
        with httpx.Client(base_url=server.base, timeout=60) as http:
            body = {"resourceType": "Patient", "id": pid, "name": [{"family": f"w{n}"}]}
            return http.put(f"/Patient/{pid}", json=body).json()["meta"]["versionId"]

    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(write, range(24)))
    assert sorted(int(v) for v in versions) == list(range(2, 26))
