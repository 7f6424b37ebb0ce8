"""Parameters that contain another parameter whole (``combo-code`` ⊇ ``code``, ``phonetic`` ≡ ``name``)
read the rows of both: every search behaviour of the larger parameter stays as the spec defines it."""

from __future__ import annotations

import httpx
from rest_helpers import create
from rest_helpers import entry_ids as ids

LOINC = "http://loinc.org"


def coded(system: str, code: str) -> dict:
    return {"coding": [{"system": system, "code": code}]}


def observations(client: httpx.Client, system: str) -> tuple[str, str, str]:
    """One Observation coded ``a`` itself, one with a component coded ``a``, one with neither."""
    mark = {"identifier": [{"system": system, "value": "mine"}]}
    own = create(client, {"resourceType": "Observation", "status": "final", "code": coded(system, "a"), **mark})
    component = create(client, {"resourceType": "Observation", "status": "final", "code": coded(system, "panel"),
                                "component": [{"code": coded(system, "a"), "valueString": "x"}], **mark})
    other = create(client, {"resourceType": "Observation", "status": "final", "code": coded(system, "b"), **mark})
    return own, component, other


def test_combo_code_matches_the_code_and_the_component_codes(client: httpx.Client, unique: str) -> None:
    system = f"urn:combo:{unique}"
    own, component, _other = observations(client, system)
    assert set(ids(client, "/Observation", **{"combo-code": f"{system}|a"})) == {own, component}
    assert ids(client, "/Observation", code=f"{system}|a") == [own]
    assert ids(client, "/Observation", **{"component-code": f"{system}|a"}) == [component]


def test_combo_code_not_excludes_a_match_in_either_part(client: httpx.Client, unique: str) -> None:
    system = f"urn:combo:{unique}"
    _own, _component, other = observations(client, system)
    assert ids(client, "/Observation", **{"combo-code:not": f"{system}|a", "identifier": f"{system}|"}) == [other]


def test_combo_value_quantity_missing_looks_at_both_parts(client: httpx.Client, unique: str) -> None:
    system = f"urn:combo:{unique}"
    quantity = {"value": 1, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}

    def observation(label: str, **extra: object) -> str:
        return create(client, {"resourceType": "Observation", "status": "final", "code": coded(system, "c"),
                               "identifier": [{"system": system, "value": label}], **extra})

    own = observation("own", valueQuantity=quantity)
    component = observation("component", component=[{"code": coded(system, "part"), "valueQuantity": quantity}])
    neither = observation("neither", valueString="none")
    identifiers = f"{system}|own,{system}|component,{system}|neither"
    assert set(ids(client, "/Observation", **{"combo-value-quantity:missing": "false", "identifier": identifiers})) \
        == {own, component}
    assert ids(client, "/Observation", **{"combo-value-quantity:missing": "true", "identifier": identifiers}) == [neither]


def test_combo_code_one_match_per_resource_in_the_total(client: httpx.Client, unique: str) -> None:
    system = f"urn:combo:{unique}"
    both = create(client, {"resourceType": "Observation", "status": "final", "code": coded(system, "a"),
                           "component": [{"code": coded(system, "a"), "valueString": "x"}]})
    response = client.get("/Observation", params={"combo-code": f"{system}|a", "_total": "accurate"})
    assert response.status_code == 200
    assert response.json()["total"] == 1 and [e["resource"]["id"] for e in response.json()["entry"]] == [both]


def test_phonetic_finds_the_names_that_name_finds(client: httpx.Client, unique: str) -> None:
    family = f"Phon{unique}"
    patient = create(client, {"resourceType": "Patient", "name": [{"family": family, "given": ["Ada"]}]})
    assert ids(client, "/Patient", phonetic=family) == [patient]
    assert ids(client, "/Patient", name=family) == [patient]


def test_sort_by_phonetic_orders_by_the_shared_name_rows(client: httpx.Client, unique: str) -> None:
    tag = f"urn:sort:{unique}"
    later = create(client, {"resourceType": "Patient", "meta": {"tag": [{"system": tag, "code": "x"}]},
                            "name": [{"family": "Zed"}]})
    first = create(client, {"resourceType": "Patient", "meta": {"tag": [{"system": tag, "code": "x"}]},
                            "name": [{"family": "Abel"}]})
    assert ids(client, "/Patient", _tag=f"{tag}|x", _sort="phonetic") == [first, later]
    assert ids(client, "/Patient", _tag=f"{tag}|x", _sort="-phonetic") == [later, first]


def test_sort_over_several_types_reads_each_types_rows(client: httpx.Client, unique: str) -> None:
    # Organization.name (name | alias) contains phonetic; Patient.phonetic is stored under name
    tag = f"urn:multi:{unique}"
    meta = {"tag": [{"system": tag, "code": "x"}]}
    made = {
        create(client, {"resourceType": "Patient", "meta": meta, "name": [{"family": "Bbb"}]}): "Bbb",
        create(client, {"resourceType": "Organization", "meta": meta, "name": "Aaa"}): "Aaa",
        create(client, {"resourceType": "Patient", "meta": meta, "name": [{"family": "Ddd"}]}): "Ddd",
        create(client, {"resourceType": "Organization", "meta": meta, "name": "Ccc"}): "Ccc",
    }
    for types in ("Patient,Organization", "Organization,Patient"):
        for sort in ("name", "phonetic"):
            found = ids(client, "/", _type=types, _tag=f"{tag}|x", _sort=sort)
            assert [made[i] for i in found] == ["Aaa", "Bbb", "Ccc", "Ddd"], (types, sort)
