"""Result and common parameters over HTTP, on SQLite and PostgreSQL: ``_id``, ``_lastUpdated``,
``_tag``, ``_profile``, ``_security``, chains, ``_has``, ``_include``/``_revinclude``, ``_sort``,
``_total``, ``_summary``, ``_elements``, ``POST _search`` and system search with ``_type``.

Expected answers are computed from the generated data set (``tests/search_data.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import httpx
import pytest
from search_data import (
    CONFIDENTIALITY,
    DATES,
    FLAG_SYSTEM,
    LOINC,
    PROFILE_A,
    PROFILE_B,
    QUANTITIES,
    REFERENCES,
    RUN,
    RUN_TAG,
    STRINGS,
    TOKENS,
    UTC_MIN,
    Dataset,
    compare_dates,
    date_range,
    ids,
    load,
    normalize,
    relative,
    search,
    string_matches,
    token_matches,
)

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}


@pytest.fixture
def data(server) -> Dataset:
    return load(server)


def run(client: httpx.Client, path: str, params: dict | list[tuple[str, str]], **kwargs: object):
    """A search restricted to this run's data, with pages big enough for the whole data set."""
    pairs = list(params.items()) if isinstance(params, dict) else list(params)
    return search(client, path, [*pairs, ("_tag", RUN_TAG), ("_count", "300")], **kwargs)  # type: ignore[arg-type]


def matched(client: httpx.Client, res_type: str, params: dict | list[tuple[str, str]]) -> set[str]:
    result = run(client, f"/{res_type}", params)
    found = result.ids()
    assert len(found) == len(set(found)) == result.total
    return set(found)


def refs(resources: list[dict]) -> set[str]:
    return {f"{r['resourceType']}/{r['id']}" for r in resources}


def targets(data: Dataset, res_type: str, param: str, sources: list[dict]) -> set[str]:
    return {relative(x) for r in sources for x in REFERENCES[(res_type, param)](r)}


def referring(data: Dataset, res_type: str, param: str, wanted: set[str]) -> list[dict]:
    return [r for r in data.of(res_type) if any(relative(x) in wanted for x in REFERENCES[(res_type, param)](r))]


# --------------------------------------------------------------------------- _id, _lastUpdated, meta


def test_id_matches_any_of_several_ids(client: httpx.Client, data: Dataset) -> None:
    wanted = {data.of("Patient")[3]["id"], data.of("Patient")[40]["id"]}
    assert matched(client, "Patient", {"_id": ",".join(sorted(wanted))}) == wanted


def test_id_not_excludes_that_id(client: httpx.Client, data: Dataset) -> None:
    excluded = data.of("Patient")[3]["id"]
    assert matched(client, "Patient", {"_id:not": excluded}) == {p["id"] for p in data.of("Patient")} - {excluded}


@pytest.mark.parametrize("param", ["_id", "_lastUpdated"])
def test_id_and_last_updated_are_never_missing(client: httpx.Client, data: Dataset, param: str) -> None:
    everyone = {p["id"] for p in data.of("Patient")}
    assert matched(client, "Patient", {f"{param}:missing": "false"}) == everyone
    assert matched(client, "Patient", {f"{param}:missing": "true"}) == set()


@pytest.mark.parametrize("prefix", ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"])
@pytest.mark.parametrize("precision", ["microsecond", "second"])
def test_last_updated_compares_the_instant(client: httpx.Client, data: Dataset, prefix: str, precision: str) -> None:
    patients = data.of("Patient")
    middle = sorted(p["meta"]["lastUpdated"] for p in patients)[len(patients) // 2]
    value = middle if precision == "microsecond" else middle[:19] + "Z"
    query = date_range(value)
    expected = ids(patients, lambda r: compare_dates(prefix, date_range(r["meta"]["lastUpdated"]), query))
    assert matched(client, "Patient", {"_lastUpdated": f"{prefix}{value}"}) == expected


@pytest.mark.parametrize(("param", "value"), [
    ("_tag", f"{FLAG_SYSTEM}|vip"), ("_tag", "research"), ("_tag:not", f"{FLAG_SYSTEM}|vip"),
    ("_security", f"{CONFIDENTIALITY}|R"), ("_security", "N"), ("_security:missing", "true"),
])
@pytest.mark.parametrize("res_type", ["Patient", "Observation"])
def test_meta_tag_and_security_are_tokens(client: httpx.Client, data: Dataset, res_type: str, param: str, value: str) -> None:
    code, _, modifier = param.partition(":")
    if modifier == "missing":
        expected = ids(data.of(res_type), lambda r: not TOKENS[(res_type, code)](r))
    else:
        expected = ids(data.of(res_type), lambda r: token_matches(TOKENS[(res_type, code)](r), value, modifier or None))
    assert 0 < len(expected) < len(data.of(res_type))
    assert matched(client, res_type, {param: value}) == expected


@pytest.mark.parametrize(("param", "value"), [
    ("_profile", PROFILE_A), ("_profile", f"{PROFILE_A},{PROFILE_B}"), ("_profile:below", f"http://example.org/fhir/{RUN}/"),
    ("_profile:missing", "true"),
])
def test_meta_profile_is_a_uri(client: httpx.Client, data: Dataset, param: str, value: str) -> None:
    def keep(patient: dict) -> bool:
        profiles = patient["meta"].get("profile", [])
        if param.endswith(":missing"):
            return not profiles
        if param.endswith(":below"):
            return any(p.startswith(value) for p in profiles)
        return any(p in value.split(",") for p in profiles)

    expected = ids(data.of("Patient"), keep)
    assert 0 < len(expected) < len(data.of("Patient"))
    assert matched(client, "Patient", {param: value}) == expected


# --------------------------------------------------------------------------- chains and _has


def _patients_where(data: Dataset, keep: Callable[[dict], bool]) -> set[str]:
    return {f"Patient/{p['id']}" for p in data.of("Patient") if keep(p)}


def _organizations_named(data: Dataset, value: str) -> set[str]:
    return {f"Organization/{o['id']}" for o in data.of("Organization") if string_matches(STRINGS[("Organization", "name")](o), value, None)}


def test_chain_one_level_with_type_modifier(client: httpx.Client, data: Dataset) -> None:
    patients = _patients_where(data, lambda p: string_matches(STRINGS[("Patient", "family")](p), "mull", None))
    expected = ids(referring(data, "Observation", "subject", patients), lambda r: True)
    assert len(expected) > 0
    assert matched(client, "Observation", {"subject:Patient.family": "mull"}) == expected


def test_chain_one_level_on_a_single_target_reference(client: httpx.Client, data: Dataset) -> None:
    patients = _patients_where(data, lambda p: p.get("gender") == "female")
    expected = ids(referring(data, "Observation", "patient", patients), lambda r: True)
    assert matched(client, "Observation", {"patient.gender": "female"}) == expected


def test_chain_without_type_searches_every_target_type_with_that_parameter(client: httpx.Client, data: Dataset) -> None:
    """``subject`` may be a Patient, Group, Device or Location: ``subject.name`` searches all that have ``name`` (as HAPI)."""
    patients = _patients_where(data, lambda p: string_matches(STRINGS[("Patient", "name")](p), "zoe", None))
    expected = ids(referring(data, "Observation", "subject", patients), lambda r: True)
    assert len(expected) > 0
    assert matched(client, "Observation", {"subject.name": "zoe"}) == expected


def test_chain_with_modifier_on_the_chained_parameter(client: httpx.Client, data: Dataset) -> None:
    patients = _patients_where(data, lambda p: "Müller" in STRINGS[("Patient", "family")](p))
    expected = ids(referring(data, "Observation", "patient", patients), lambda r: True)
    assert matched(client, "Observation", {"patient.family:exact": "Müller"}) == expected


def test_chain_on_a_token(client: httpx.Client, data: Dataset) -> None:
    patient = data.of("Patient")[11]
    value = f"{patient['identifier'][0]['system']}|{patient['identifier'][0]['value']}"
    expected = ids(referring(data, "Encounter", "subject", {f"Patient/{patient['id']}"}), lambda r: True)
    assert matched(client, "Encounter", {"subject:Patient.identifier": value}) == expected


def test_chain_two_levels(client: httpx.Client, data: Dataset) -> None:
    organizations = _organizations_named(data, "klinikum")
    patients = {f"Patient/{p['id']}" for p in referring(data, "Patient", "organization", organizations)}
    expected = ids(referring(data, "Observation", "subject", patients), lambda r: True)
    assert len(expected) > 0
    assert matched(client, "Observation", {"subject:Patient.organization.name": "klinikum"}) == expected


def test_chain_three_levels(client: httpx.Client, data: Dataset) -> None:
    parents = _organizations_named(data, "hopital")
    organizations = {f"Organization/{o['id']}" for o in referring(data, "Organization", "partof", parents)}
    patients = {f"Patient/{p['id']}" for p in referring(data, "Patient", "organization", organizations)}
    expected = ids(referring(data, "Observation", "patient", patients), lambda r: True)
    assert len(expected) > 0
    assert matched(client, "Observation", {"patient.organization.partof.name": "hopital"}) == expected


def test_chain_values_are_or_ed(client: httpx.Client, data: Dataset) -> None:
    patients = _patients_where(data, lambda p: p.get("gender") in ("male", "other"))
    expected = ids(referring(data, "Observation", "patient", patients), lambda r: True)
    assert matched(client, "Observation", {"patient.gender": "male,other"}) == expected


def test_has_selects_targets_of_matching_referrers(client: httpx.Client, data: Dataset) -> None:
    observations = [o for o in data.of("Observation") if token_matches(TOKENS[("Observation", "code")](o), "8867-4", None)]
    expected = {relative(x).split("/")[1] for x in targets(data, "Observation", "patient", observations)}
    assert 0 < len(expected) < len(data.of("Patient"))
    assert matched(client, "Patient", {"_has:Observation:patient:code": "8867-4"}) == expected


def test_has_and_other_criteria_are_and_ed(client: httpx.Client, data: Dataset) -> None:
    encounters = [e for e in data.of("Encounter") if e["status"] == "finished"]
    with_encounter = {relative(x).split("/")[1] for x in targets(data, "Encounter", "subject", encounters)}
    expected = with_encounter & ids(data.of("Patient"), lambda p: p.get("gender") == "female")
    assert matched(client, "Patient", {"_has:Encounter:subject:status": "finished", "gender": "female"}) == expected


def test_has_nested(client: httpx.Client, data: Dataset) -> None:
    observations = [o for o in data.of("Observation") if token_matches(TOKENS[("Observation", "code")](o), f"{LOINC}|8480-6", None)]
    patients = targets(data, "Observation", "patient", observations)
    organizations = targets(data, "Patient", "organization", [data.get(p) for p in patients])  # type: ignore[misc]
    expected = {o.split("/")[1] for o in organizations}
    assert len(expected) > 0
    found = matched(client, "Organization", {"_has:Patient:organization:_has:Observation:patient:code": f"{LOINC}|8480-6"})
    assert found == expected


def test_has_with_a_chain_inside(client: httpx.Client, data: Dataset) -> None:
    organizations = _organizations_named(data, "klinikum")
    encounters = referring(data, "Encounter", "service-provider", organizations)
    expected = {relative(x).split("/")[1] for x in targets(data, "Encounter", "subject", encounters)}
    assert matched(client, "Patient", {"_has:Encounter:subject:service-provider.name": "klinikum"}) == expected


# --------------------------------------------------------------------------- _include, _revinclude


def _observations_with_code(data: Dataset, code: str) -> list[dict]:
    return [o for o in data.of("Observation") if token_matches(TOKENS[("Observation", "code")](o), code, None)]


def test_include_adds_the_targets_as_include_entries(client: httpx.Client, data: Dataset) -> None:
    observations = _observations_with_code(data, "8867-4")
    result = run(client, "/Observation", [("code", "8867-4"), ("_include", "Observation:subject")])
    assert set(result.ids()) == {o["id"] for o in observations}
    assert result.refs("include") == targets(data, "Observation", "subject", observations)
    assert len(result.ids("include")) == len(result.refs("include"))
    assert all(e["fullUrl"] == f"{data.base}/{e['resource']['resourceType']}/{e['resource']['id']}" for e in result.entries)


def test_include_with_target_type(client: httpx.Client, data: Dataset) -> None:
    result = run(client, "/Observation", [("code", "WT"), ("_include", "Observation:performer:Patient")])
    assert result.refs("include") == set()
    result = run(client, "/Observation", [("code", "WT"), ("_include", "Observation:performer:Organization")])
    assert result.refs("include") == targets(data, "Observation", "performer", _observations_with_code(data, "WT"))


def test_include_wildcard_follows_every_reference(client: httpx.Client, data: Dataset) -> None:
    observations = _observations_with_code(data, "WT")
    expected = set().union(*(targets(data, "Observation", p, observations) for p in ("subject", "encounter", "performer")))
    assert run(client, "/Observation", [("code", "WT"), ("_include", "Observation:*")]).refs("include") == expected
    assert run(client, "/Observation", [("code", "WT"), ("_include", "*")]).refs("include") == expected


def test_include_iterate_follows_references_of_included_resources(client: httpx.Client, data: Dataset) -> None:
    observations = _observations_with_code(data, "8310-5")
    patients = targets(data, "Observation", "subject", observations)
    organizations = targets(data, "Patient", "organization", [data.get(p) for p in patients])  # type: ignore[misc]
    result = run(client, "/Observation", [("code", "8310-5"), ("_include", "Observation:subject"),
                                          ("_include:iterate", "Patient:organization")])
    assert result.refs("include") == patients | organizations


def test_include_iterate_repeats_until_nothing_new(client: httpx.Client, data: Dataset) -> None:
    organization = f"Organization/{RUN}-org-5"
    patients = referring(data, "Patient", "organization", {organization})
    assert patients
    result = run(client, "/Patient", [("organization", organization), ("_include", "Patient:organization"),
                                      ("_include:iterate", "Organization:partof")])
    assert result.refs("include") == {organization, f"Organization/{RUN}-org-1", f"Organization/{RUN}-org-0"}


def test_include_without_iterate_stops_after_one_step(client: httpx.Client, data: Dataset) -> None:
    organization = f"Organization/{RUN}-org-5"
    result = run(client, "/Patient", [("organization", organization), ("_include", "Patient:organization"),
                                      ("_include", "Organization:partof")])
    assert result.refs("include") == {organization}


def test_revinclude_adds_the_referrers(client: httpx.Client, data: Dataset) -> None:
    patients = [p for p in data.of("Patient") if string_matches(STRINGS[("Patient", "family")](p), "mull", None)]
    expected = refs(referring(data, "Observation", "subject", refs(patients)))
    result = run(client, "/Patient", [("family", "mull"), ("_revinclude", "Observation:subject")])
    assert set(result.ids()) == {p["id"] for p in patients}
    assert result.refs("include") == expected


def test_revinclude_wildcard_adds_every_referrer(client: httpx.Client, data: Dataset) -> None:
    patients = [p for p in data.of("Patient") if string_matches(STRINGS[("Patient", "family")](p), "smith", None)]
    wanted = refs(patients)
    expected = set().union(*(refs(referring(data, t, p, wanted)) for t, p in
                             (("Observation", "subject"), ("Encounter", "subject"), ("RiskAssessment", "subject"))))
    assert run(client, "/Patient", [("family", "smith"), ("_revinclude", "*")]).refs("include") == expected


def test_revinclude_iterate_walks_down_a_hierarchy(client: httpx.Client, data: Dataset) -> None:
    result = run(client, "/Organization", [("_id", f"{RUN}-org-0"), ("_revinclude:iterate", "Organization:partof")])
    assert result.refs("include") == {f"Organization/{RUN}-org-{i}" for i in (1, 2, 5)}


def test_include_and_revinclude_together(client: httpx.Client, data: Dataset) -> None:
    patient = next(p for p in data.of("Patient") if "managingOrganization" in p)
    result = run(client, "/Patient", [("_id", patient["id"]), ("_include", "Patient:organization"),
                                      ("_revinclude", "Encounter:patient")])
    expected = {relative(patient["managingOrganization"]["reference"])} | refs(referring(data, "Encounter", "patient", {f"Patient/{patient['id']}"}))
    assert result.refs("include") == expected


def test_include_is_resolved_per_page(client: httpx.Client, data: Dataset) -> None:
    result = search(client, "/Observation", [("code", "8867-4"), ("_include", "Observation:subject"), ("_tag", RUN_TAG),
                                             ("_count", "4")])
    assert len(result.pages) > 2
    for page in result.pages:
        matches = [e["resource"] for e in page["entry"] if e["search"]["mode"] == "match"]
        included = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in page["entry"] if e["search"]["mode"] == "include"}
        assert included == targets(data, "Observation", "subject", matches)


# --------------------------------------------------------------------------- _sort


def _lowest_given(patient: dict) -> str:
    return min((normalize(g) for g in STRINGS[("Patient", "given")](patient)), default="")


def _highest_birth(patient: dict) -> datetime:
    return max((low for low, _ in DATES[("Patient", "birthdate")](patient)), default=UTC_MIN)


def _sorted(resources: list[dict], *keys: tuple[Callable[[dict], object], bool]) -> list[str]:
    """Stable multi-key sort, last key first."""
    ordered = list(resources)
    for key, descending in reversed(keys):
        ordered.sort(key=key, reverse=descending)  # type: ignore[arg-type]
    return [r["id"] for r in ordered]


def _by_id(r: dict) -> str:
    return r["id"]


def _lowest_date(observation: dict) -> datetime:
    return min((low for low, _ in DATES[("Observation", "date")](observation)), default=UTC_MIN)


def _highest_date(observation: dict) -> datetime:
    return max((low for low, _ in DATES[("Observation", "date")](observation)), default=UTC_MIN)


SORTS = [
    pytest.param("Patient", "_id", [(_by_id, False)], id="_id"),
    pytest.param("Patient", "-_id", [(_by_id, True)], id="-_id"),
    pytest.param("Patient", "given,-birthdate,_id", [(_lowest_given, False), (_highest_birth, True), (_by_id, False)],
                 id="given,-birthdate,_id"),
    pytest.param("Patient", "-birthdate,_id", [(_highest_birth, True), (_by_id, False)], id="-birthdate,_id"),
    pytest.param("Patient", "gender,-_id", [(lambda r: r.get("gender", ""), False), (_by_id, True)], id="gender,-_id"),
    pytest.param("Patient", "-_lastUpdated", [(lambda r: r["meta"]["lastUpdated"], True)], id="-_lastUpdated"),
    pytest.param("Observation", "date,_id", [(_lowest_date, False), (_by_id, False)], id="date,_id"),
    pytest.param("Observation", "-date,-_id", [(_highest_date, True), (_by_id, True)], id="-date,-_id"),
    pytest.param("Observation", "value-quantity,_id",
                 [(lambda r: min((q[0] for q in QUANTITIES[("Observation", "value-quantity")](r)), default=-1e30), False), (_by_id, False)],
                 id="value-quantity,_id"),
    pytest.param("Observation", "status,-_id", [(lambda r: r["status"], False), (_by_id, True)], id="status,-_id"),
]


@pytest.mark.parametrize(("res_type", "sort", "keys"), SORTS)
@pytest.mark.parametrize("count", ["300", "7"])
def test_sort_orders_by_several_keys_across_pages(
    client: httpx.Client, data: Dataset, res_type: str, sort: str, keys: list, count: str
) -> None:
    """Several values per resource: ascending sorts by the lowest, descending by the highest (as HAPI).
    Resources without a value sort first ascending and last descending."""
    result = search(client, f"/{res_type}", [("_sort", sort), ("_tag", RUN_TAG), ("_count", count)])
    assert result.ids() == _sorted(data.of(res_type), *keys)


def test_sort_by_unknown_parameter_is_400(client: httpx.Client) -> None:
    response = client.get("/Patient", params={"_sort": "banana"})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["_sort"]


# --------------------------------------------------------------------------- _total, _summary, _elements


def test_total_accurate_estimate_and_none(client: httpx.Client, data: Dataset) -> None:
    expected = len(data.of("Observation"))
    for total in ("accurate", "estimate"):
        assert run(client, "/Observation", {"_total": total}).total == expected
    page = client.get("/Observation", params={"_tag": RUN_TAG, "_total": "none", "_count": "5"}).json()
    assert "total" not in page and len(page["entry"]) == 5


@pytest.mark.parametrize("page_size", ["1", "5", "1000"])
def test_total_is_the_same_whether_or_not_the_first_page_holds_every_match(
    client: httpx.Client, data: Dataset, page_size: str
) -> None:
    expected = len([p for p in data.of("Patient") if p.get("gender") == "female"])
    assert 5 < expected < 1000  # so the sizes cover a partial and a complete first page
    page = client.get("/Patient", params={"_tag": RUN_TAG, "gender": "female", "_count": page_size}).json()
    assert page["total"] == expected
    assert len(page.get("entry", [])) == min(expected, int(page_size))


def test_summary_count_returns_only_the_total(client: httpx.Client, data: Dataset) -> None:
    page = client.get("/Observation", params={"_tag": RUN_TAG, "_summary": "count", "status": "final"}).json()
    assert page["total"] == len([o for o in data.of("Observation") if o["status"] == "final"])
    assert "entry" not in page
    assert [link["relation"] for link in page["link"]] == ["self"]


def test_count_zero_returns_only_the_total(client: httpx.Client, data: Dataset) -> None:
    page = client.get("/Patient", params={"_tag": RUN_TAG, "_count": "0"}).json()
    assert page["total"] == len(data.of("Patient")) and "entry" not in page


def _stored(data: Dataset, resource: dict) -> dict:
    original = data.get(f"{resource['resourceType']}/{resource['id']}")
    assert original is not None
    return original


def test_summary_true_keeps_summary_elements_and_marks_subsetted(client: httpx.Client, data: Dataset) -> None:
    resources = run(client, "/Patient", {"_summary": "true"}).resources()
    assert len(resources) == len(data.of("Patient"))
    for resource in resources:
        original = _stored(data, resource)
        assert SUBSETTED in resource["meta"]["tag"]
        assert "text" not in resource and "maritalStatus" not in resource
        for element in ("name", "gender", "birthDate", "identifier", "managingOrganization"):
            assert (element in resource) == (element in original)
    assert any("maritalStatus" in _stored(data, r) for r in resources)


def test_summary_text_keeps_text_and_mandatory_elements(client: httpx.Client, data: Dataset) -> None:
    for resource in run(client, "/Observation", {"code": "WT", "_summary": "text"}).resources():
        assert set(resource) <= {"resourceType", "id", "meta", "text", "status", "code"}
        assert {"status", "code"} <= set(resource)
        assert SUBSETTED in resource["meta"]["tag"]
    for resource in run(client, "/Patient", {"_summary": "text"}).resources():
        assert set(resource) <= {"resourceType", "id", "meta", "text"}
        assert ("text" in resource) == ("text" in _stored(data, resource))


def test_summary_data_removes_only_the_text(client: httpx.Client, data: Dataset) -> None:
    for resource in run(client, "/Patient", {"_summary": "data"}).resources():
        assert set(resource) == set(_stored(data, resource)) - {"text"}
        assert SUBSETTED in resource["meta"]["tag"]


def test_summary_false_returns_whole_resources(client: httpx.Client, data: Dataset) -> None:
    for resource in run(client, "/Patient", {"_summary": "false"}).resources():
        assert resource == _stored(data, resource)


def test_elements_keeps_the_named_and_mandatory_elements(client: httpx.Client, data: Dataset) -> None:
    for resource in run(client, "/Patient", {"_elements": "name,gender"}).resources():
        original = _stored(data, resource)
        assert set(resource) == {"resourceType", "id", "meta"} | ({"name", "gender"} & set(original))
        assert SUBSETTED in resource["meta"]["tag"]
    for resource in run(client, "/Observation", {"_elements": "subject"}).resources():
        assert {"status", "code"} <= set(resource) <= {"resourceType", "id", "meta", "status", "code", "subject"}


def test_elements_does_not_apply_to_included_resources(client: httpx.Client, data: Dataset) -> None:
    result = run(client, "/Observation", [("code", "WT"), ("_elements", "code"), ("_include", "Observation:subject")])
    assert result.resources("include")
    for resource in result.resources("include"):
        assert resource == _stored(data, resource)


# --------------------------------------------------------------------------- POST _search, system search


def test_post_search_with_form_body_equals_get(client: httpx.Client, data: Dataset) -> None:
    params = [("family", "mull,garcia"), ("_include", "Patient:organization"), ("_sort", "-_id")]
    get, post = run(client, "/Patient", params), run(client, "/Patient", params, post=True)
    assert post.ids() == get.ids() and post.ids("include") == get.ids("include")
    assert get.ids()


def test_post_search_combines_query_string_and_body(client: httpx.Client, data: Dataset) -> None:
    response = client.post("/Patient/_search?gender=female", data={"_tag": RUN_TAG, "_count": "300"})
    assert response.status_code == 200
    found = {e["resource"]["id"] for e in response.json()["entry"]}
    assert found == ids(data.of("Patient"), lambda p: p.get("gender") == "female")


@pytest.mark.parametrize("post", [False, True], ids=["GET", "POST"])
def test_system_search_with_type_searches_those_types(client: httpx.Client, data: Dataset, post: bool) -> None:
    result = search(client, "/", [("_type", "Patient,Organization"), ("_tag", RUN_TAG), ("_count", "25"),
                                  ("_security", f"{CONFIDENTIALITY}|R")], post=post)
    expected = {f"{r['resourceType']}/{r['id']}" for t in ("Patient", "Organization") for r in data.of(t)
                if token_matches(TOKENS[(t, "_security")](r), f"{CONFIDENTIALITY}|R", None)}
    assert result.refs("match") == expected and len(result.ids()) == len(expected)
    assert {r["resourceType"] for r in result.resources()} == {"Patient", "Organization"}


def test_system_search_with_type_and_a_type_specific_parameter(client: httpx.Client, data: Dataset) -> None:
    result = search(client, "/", [("_type", "Patient,Organization"), ("_tag", RUN_TAG), ("name", "kli"), ("_count", "100")])
    expected = {f"{t}/{r['id']}" for t in ("Patient", "Organization") for r in data.of(t)
                if string_matches(STRINGS[(t, "name")](r), "kli", None)}
    assert result.refs("match") == expected


def test_system_search_without_type_uses_the_common_parameters(client: httpx.Client, data: Dataset) -> None:
    result = search(client, "/", [("_tag", RUN_TAG), ("_tag", f"{FLAG_SYSTEM}|research"), ("_count", "1000")])
    expected = {f"{t}/{r['id']}" for t, resources in data.by_type.items() for r in resources
                if token_matches(TOKENS[(t, "_tag")](r), f"{FLAG_SYSTEM}|research", None)}
    assert len(expected) > 10
    assert result.refs("match") == expected


def test_system_search_sorted_by_id_across_pages(client: httpx.Client, data: Dataset) -> None:
    result = search(client, "/", [("_type", "Organization,ValueSet"), ("_tag", RUN_TAG), ("_sort", "_id"), ("_count", "3")])
    assert result.ids() == sorted(r["id"] for t in ("Organization", "ValueSet") for r in data.of(t))
    assert len(result.pages) > 2


def test_system_search_with_include(client: httpx.Client, data: Dataset) -> None:
    result = search(client, "/", [("_type", "Patient"), ("_id", data.of("Patient")[0]["id"]),
                                  ("_revinclude", "Observation:subject")])
    assert result.refs("include") == refs(referring(data, "Observation", "subject", {f"Patient/{data.of('Patient')[0]['id']}"}))
