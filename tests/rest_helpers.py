"""Small REST helpers shared by tests that write resources and read search answers."""

from __future__ import annotations

import httpx


def create(client: httpx.Client, resource: dict) -> str:
    """POST ``resource`` to its type; the new id (the answer must be 201)."""
    response = client.post(f"/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def entry_ids(client: httpx.Client, path: str, **params: str) -> list[str]:
    """Ids of the entries of a search answer, in answer order (the answer must be 200)."""
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return [entry["resource"]["id"] for entry in response.json().get("entry", [])]
