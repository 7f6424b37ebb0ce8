"""Paging over HTTP, on SQLite and PostgreSQL: ``_count``, ``self``/``next``/``previous`` links
and keyset cursors that neither skip nor repeat resources while data changes.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
from search_data import RUN_TAG, TAG_SYSTEM, Dataset, link, load, query_of, search


@pytest.fixture
def data(server) -> Dataset:
    return load(server)


def page(client: httpx.Client, url: str, params: list[tuple[str, str]] | None = None) -> dict:
    response = client.get(url, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def match_ids(bundle: dict) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


@pytest.mark.parametrize("sort", ["", "_id", "-_id", "family,_id", "-birthdate", "-_lastUpdated"])
def test_pages_cover_every_match_once_in_order(client: httpx.Client, data: Dataset, sort: str) -> None:
    params = [("_tag", RUN_TAG), ("_count", "300")] + ([("_sort", sort)] if sort else [])
    whole = search(client, "/Patient", params).ids()
    paged = search(client, "/Patient", [*params[:1], ("_count", "7"), *params[2:]])
    assert paged.ids() == whole
    assert len(whole) == len(data.of("Patient"))
    assert [len(match_ids(p)) for p in paged.pages] == [7] * 8 + [4]
    assert {p["total"] for p in paged.pages} == {len(whole)}


@pytest.mark.parametrize("sort", ["", "-birthdate", "given,-_id"])
def test_previous_links_walk_back_over_the_same_pages(client: httpx.Client, data: Dataset, sort: str) -> None:
    params = [("_tag", RUN_TAG), ("_count", "9")] + ([("_sort", sort)] if sort else [])
    forward = search(client, "/Patient", params).pages
    assert link(forward[0], "previous") is None and link(forward[-1], "next") is None
    backward = [forward[-1]]
    while (previous := link(backward[-1], "previous")) is not None:
        backward.append(page(client, previous))
    assert [match_ids(p) for p in reversed(backward)] == [match_ids(p) for p in forward]


def test_self_link_repeats_the_query_and_the_page(client: httpx.Client, data: Dataset) -> None:
    first = page(client, "/Patient", [("_tag", RUN_TAG), ("gender", "female"), ("_count", "5"), ("_sort", "-_id")])
    assert sorted(query_of(link(first, "self"))) == sorted([("_tag", RUN_TAG), ("gender", "female"), ("_count", "5"), ("_sort", "-_id")])
    second = page(client, link(first, "next"))
    assert match_ids(page(client, link(second, "self"))) == match_ids(second)
    assert dict(query_of(link(second, "next")))["_sort"] == "-_id"


def test_count_defaults_to_the_configured_page_size(client: httpx.Client, data: Dataset) -> None:
    assert len(match_ids(page(client, "/Observation", [("_tag", RUN_TAG)]))) == 20


def test_count_above_the_maximum_is_capped(client: httpx.Client, data: Dataset) -> None:
    bundle = page(client, "/Observation", [("_tag", RUN_TAG), ("_count", "100000")])
    assert len(match_ids(bundle)) == len(data.of("Observation"))
    assert link(bundle, "next") is None


# --------------------------------------------------------------------------- data changing between pages


def _patient(marker: str, n: int) -> dict:
    return {
        "resourceType": "Patient",
        "id": f"{marker}-{n:03d}",
        "meta": {"tag": [{"system": TAG_SYSTEM, "code": marker}]},
        "name": [{"family": f"family{n:03d}"}],
        "birthDate": f"{1950 + n % 40}-01-01",
    }


@pytest.mark.parametrize("sort", ["", "_id", "-_id", "family", "-birthdate,_id"])
def test_next_links_skip_nothing_and_repeat_nothing_while_data_changes(client: httpx.Client, sort: str) -> None:
    """Fetch page 1, delete and insert matching resources around and after it, follow ``next``:
    every resource that existed throughout is seen exactly once (keyset paging, no OFFSET drift)."""
    marker = f"paging-{uuid.uuid4().hex[:8]}"
    for n in range(10, 60, 2):
        assert client.put(f"/Patient/{marker}-{n:03d}", json=_patient(marker, n)).status_code == 201
    params = [("_tag", f"{TAG_SYSTEM}|{marker}"), ("_count", "6")] + ([("_sort", sort)] if sort else [])
    first = page(client, "/Patient", params)
    seen = match_ids(first)
    deleted = {f"{marker}-{n:03d}" for n in (10, 20, 30, 40, 58)} | {seen[0], seen[-1]}
    for res_id in deleted:
        assert client.delete(f"/Patient/{res_id}").status_code == 200
    inserted = {f"{marker}-{n:03d}" for n in (1, 11, 25, 37, 59, 61)}
    for res_id in inserted:
        n = int(res_id.rsplit("-", 1)[1])
        assert client.put(f"/Patient/{res_id}", json=_patient(marker, n)).status_code == 201
    current = first
    while (next_url := link(current, "next")) is not None:
        current = page(client, next_url)
        seen += match_ids(current)
    throughout = {f"{marker}-{n:03d}" for n in range(10, 60, 2)} - deleted
    assert len(seen) == len(set(seen)), "a resource was returned twice"
    assert throughout <= set(seen), f"skipped: {throughout - set(seen)}"
    assert not (deleted - set(match_ids(first))) & set(seen), "a resource deleted before its page was returned"


def test_previous_link_survives_deletion_of_its_first_resource(client: httpx.Client) -> None:
    marker = f"paging-{uuid.uuid4().hex[:8]}"
    for n in range(12):
        assert client.put(f"/Patient/{marker}-{n:03d}", json=_patient(marker, n)).status_code == 201
    params = [("_tag", f"{TAG_SYSTEM}|{marker}"), ("_count", "4"), ("_sort", "_id")]
    first = page(client, "/Patient", params)
    second = page(client, link(first, "next"))
    assert client.delete(f"/Patient/{match_ids(second)[0]}").status_code == 200
    third = page(client, link(second, "next"))
    back = page(client, link(third, "previous"))
    assert match_ids(back) == [f"{marker}-{n:03d}" for n in (3, 5, 6, 7)]
