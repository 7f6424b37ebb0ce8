"""Value set expansion for ``:in`` / ``:not-in``: the compose rules supported, and refusals."""

from __future__ import annotations

import pytest

from fhirfus.terminology import expansion as valuesets
from fhirfus.terminology.expansion import ValueSetError, expand

BASE = "urn:test:valuesets"


def valueset(name: str, **body: object) -> str:
    url = f"{BASE}/ValueSet/{name}"
    valuesets.register({"resourceType": "ValueSet", "url": url, "status": "active", **body})
    return url


def codesystem(name: str, concepts: list[dict], content: str = "complete") -> str:
    url = f"{BASE}/CodeSystem/{name}"
    valuesets.register({"resourceType": "CodeSystem", "url": url, "status": "active", "content": content,
                        "concept": concepts})
    return url


def test_explicit_concepts() -> None:
    url = valueset("explicit", compose={"include": [{"system": "s", "concept": [{"code": "a"}, {"code": "b"}]}]})
    assert expand(url).systems == {"s": frozenset({"a", "b"})}


def test_a_whole_known_code_system_includes_its_nested_concepts() -> None:
    system = codesystem("tree", [{"code": "parent", "concept": [{"code": "child"}]}, {"code": "other"}])
    url = valueset("tree-all", compose={"include": [{"system": system}]})
    assert expand(url).systems == {system: frozenset({"parent", "child", "other"})}


def test_a_whole_unknown_or_incomplete_code_system_means_any_of_its_codes() -> None:
    partial = codesystem("partial", [{"code": "x"}], content="fragment")
    url = valueset("whole", compose={"include": [{"system": "http://loinc.org"}, {"system": partial}]})
    assert expand(url).systems == {"http://loinc.org": None, partial: None}


def test_included_value_sets_are_united_across_includes_and_intersected_within_one() -> None:
    ab = valueset("ab", compose={"include": [{"system": "s", "concept": [{"code": "a"}, {"code": "b"}]}]})
    bc = valueset("bc", compose={"include": [{"system": "s", "concept": [{"code": "b"}, {"code": "c"}]}]})
    assert expand(valueset("union", compose={"include": [{"valueSet": [ab]}, {"valueSet": [bc]}]})).systems \
        == {"s": frozenset({"a", "b", "c"})}
    assert expand(valueset("both", compose={"include": [{"valueSet": [ab, bc]}]})).systems == {"s": frozenset({"b"})}


def test_excluded_concepts_are_removed() -> None:
    url = valueset("minus", compose={
        "include": [{"system": "s", "concept": [{"code": "a"}, {"code": "b"}]}],
        "exclude": [{"system": "s", "concept": [{"code": "a"}]}],
    })
    assert expand(url).systems == {"s": frozenset({"b"})}


def test_a_ready_expansion_is_used() -> None:
    url = valueset("expanded", expansion={"contains": [
        {"system": "s", "code": "a", "contains": [{"system": "t", "code": "b"}]}]})
    assert expand(url).systems == {"s": frozenset({"a"}), "t": frozenset({"b"})}


def test_r4_required_binding_value_sets_are_known() -> None:
    expansion = expand("http://hl7.org/fhir/ValueSet/observation-status")
    assert "final" in expansion.systems["http://hl7.org/fhir/observation-status"]  # type: ignore[operator]
    assert "final" in expansion.codes()


@pytest.mark.parametrize("body", [
    {"compose": {"include": [{"system": "s", "filter": [{"property": "concept", "op": "is-a", "value": "x"}]}]}},
    {"compose": {"include": [{"system": "http://loinc.org"}], "exclude": [{"system": "http://loinc.org",
                                                                             "concept": [{"code": "1-8"}]}]}},
    {"status": "active"},
])
def test_what_cannot_be_expanded_is_refused(body: dict) -> None:
    with pytest.raises(ValueSetError):
        expand(valueset(f"refused-{len(str(body))}", **body))


def test_an_unknown_or_self_including_value_set_is_refused() -> None:
    with pytest.raises(ValueSetError, match="not known"):
        expand(f"{BASE}/ValueSet/never-registered")
    loop = f"{BASE}/ValueSet/loop"
    valueset("loop", compose={"include": [{"valueSet": [loop]}]})
    with pytest.raises(ValueSetError, match="includes itself"):
        expand(loop)


def test_a_pinned_code_system_version_that_is_not_known_is_refused() -> None:
    system = codesystem("versioned", [{"code": "a"}])
    url = valueset("pinned", compose={"include": [{"system": system, "version": "9"}]})
    with pytest.raises(ValueSetError, match="version '9'"):
        expand(url)


def test_a_value_set_of_more_codes_than_bind_parameters_compiles_and_runs(fresh_database) -> None:
    from sqlalchemy import insert, select

    from fhirfus.db import migrate
    from fhirfus.db.tables import search_token
    from fhirfus.search.compiler import valueset_condition

    migrate.upgrade(fresh_database.engine)
    codes = [{"code": f"c{n}"} for n in range(70_000)]  # PostgreSQL binds at most 65,535 parameters
    big = {"resourceType": "ValueSet", "url": "urn:big", "compose": {"include": [{"system": "s", "concept": codes}]}}
    condition = valueset_condition(search_token.c.system, search_token.c.code, "urn:big", "code:in",
                                   lambda kind, url: big if (kind, url) == ("ValueSet", "urn:big") else None)
    with fresh_database.engine.begin() as conn:
        conn.execute(insert(search_token), [
            {"resource_pk": 1, "res_type": "Observation", "param": "code", "system": "s", "code": "c69999", "text": None},
            {"resource_pk": 2, "res_type": "Observation", "param": "code", "system": "s", "code": "other", "text": None},
        ])
        assert conn.execute(select(search_token.c.resource_pk).where(condition)).scalars().all() == [1]


def test_two_large_code_lists_in_one_value_set_keep_their_own_codes(fresh_database) -> None:
    from sqlalchemy import insert, select

    from fhirfus.db import migrate
    from fhirfus.db.tables import search_token
    from fhirfus.search.compiler import valueset_condition

    migrate.upgrade(fresh_database.engine)
    big = {"resourceType": "ValueSet", "url": "urn:two", "compose": {"include": [
        {"system": "s", "concept": [{"code": f"s{n}"} for n in range(1500)]},
        {"system": "t", "concept": [{"code": f"t{n}"} for n in range(1500)]}]}}
    condition = valueset_condition(search_token.c.system, search_token.c.code, "urn:two", "code:in",
                                   lambda kind, url: big if (kind, url) == ("ValueSet", "urn:two") else None)
    with fresh_database.engine.begin() as conn:
        conn.execute(insert(search_token), [
            {"resource_pk": pk, "res_type": "Observation", "param": "code", "system": system, "code": code, "text": None}
            for pk, system, code in ((1, "s", "s7"), (2, "t", "t7"), (3, "s", "t7"))])
        assert sorted(conn.execute(select(search_token.c.resource_pk).where(condition)).scalars()) == [1, 2]
