"""Structure checks of QuestionnaireResponses, which are checked item by item (and identical items
remembered): the outcome must be the one a check of the whole response gives."""

from __future__ import annotations

import copy

import httpx
import orjson
import pytest
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse
from pydantic import ValidationError

from fhirfus.fhir import validation
from fhirfus.fhir.validation import resource_issues


def response(*items: dict) -> dict:
    return {"resourceType": "QuestionnaireResponse", "status": "completed", "item": list(items)}


def group(link_id: str, *children: dict) -> dict:
    return {"linkId": link_id, "item": list(children)}


def answered(link_id: str, value: int) -> dict:
    return {"linkId": link_id, "answer": [{"valueInteger": value}]}


def whole_model_locations(document: dict) -> set[str]:
    """Where the fhir.resources model reports errors when given the whole response."""
    try:
        QuestionnaireResponse.model_validate(document)
    except ValidationError as exc:
        return {".".join(str(p) for p in error["loc"]) for error in exc.errors()}
    return set()


def test_a_valid_response_with_nested_groups_has_no_issues() -> None:
    assert resource_issues(response(group("g", answered("a", 1), group("h", answered("b", 2))))) == []


def test_an_unknown_element_in_a_nested_item_is_named_by_its_full_path() -> None:
    bad = {**answered("b", 2), "colour": "red"}
    issues = resource_issues(response(group("g", answered("a", 1), bad)))
    assert [i.expression for i in issues] == [("QuestionnaireResponse.item[0].item[1].colour",)]
    assert whole_model_locations(response(group("g", answered("a", 1), bad))) == {"item.0.item.1.colour"}


def test_a_wrong_answer_type_is_reported_in_every_response_that_has_it() -> None:
    bad = {"linkId": "a", "answer": [{"valueInteger": "three"}]}
    first = resource_issues(response(bad))
    second = resource_issues(response(answered("z", 0), copy.deepcopy(bad)))  # the remembered outcome
    assert [i.expression for i in first] == [("QuestionnaireResponse.item[0].answer[0].valueInteger",)]
    assert [i.expression for i in second] == [("QuestionnaireResponse.item[1].answer[0].valueInteger",)]


def test_item_by_item_gives_the_issues_of_the_whole_model() -> None:
    documents = [
        response(group("g", {"answer": [{"valueInteger": 1}]})),  # an item without linkId
        response(group("g", answered("a", 1), {**answered("b", 2), "colour": "red"}), {"linkId": 7}),
        {**response(answered("a", 1)), "shade": 1},
        response({"linkId": "a", "answer": [{"valueInteger": 1, "valueString": "both"}]}),  # two value[x]
        response({"linkId": "a", "answer": [{"valueCoding": {"code": 1, "system": "s"}}]}),
    ]
    for document in documents:
        whole = validation._issues("QuestionnaireResponse", validation._model_errors(QuestionnaireResponse, document))
        assert whole, document
        assert sorted(map(repr, resource_issues(document))) == sorted(map(repr, whole)), document


def test_a_null_item_is_rejected_as_the_whole_model_rejects_it() -> None:
    issues = resource_issues(response(answered("a", 1), None))  # type: ignore[arg-type]
    assert issues and all(i.severity == "error" for i in issues)
    assert whole_model_locations(response(answered("a", 1), None))  # type: ignore[arg-type]


def test_errors_of_the_response_and_of_its_items_are_all_reported() -> None:
    document = {**response({**answered("a", 1), "colour": "red"}), "status": "nonsense-status", "shade": 1}
    expressions = {e for i in resource_issues(document) for e in i.expression}
    assert {"QuestionnaireResponse.shade", "QuestionnaireResponse.item[0].colour"} <= expressions


def test_a_bad_nested_item_is_a_400_naming_it(client: httpx.Client) -> None:
    document = response(group("g", {**answered("a", 1), "colour": "red"}))
    answer = client.post("/QuestionnaireResponse", json=document)
    assert answer.status_code == 400
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == ["QuestionnaireResponse.item[0].item[0].colour"]


def test_an_integer_beyond_64_bits_is_an_issue_not_a_crash() -> None:
    issues = resource_issues(response({"linkId": "a", "answer": [{"valueInteger": 2**70}]}))
    assert [i.expression for i in issues] == [("QuestionnaireResponse.item[0].answer[0].valueInteger",)]


def test_large_items_are_checked_but_not_remembered() -> None:
    big = {"linkId": "a", "answer": [{"valueString": "x" * 5000}]}
    small = {"linkId": "a", "answer": [{"valueString": "x"}]}
    assert resource_issues(response(big, small)) == []
    assert orjson.dumps(small) in validation._item_errors
    assert orjson.dumps(big) not in validation._item_errors


# --- common datatypes, checked once per distinct value ---------------------------------------------------


def observation(**elements: object) -> dict:
    return {"resourceType": "Observation", "status": "final", "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}, **elements}


def whole_model_issues(document: dict) -> list:
    """The issues of the model given the whole resource, nothing remembered."""
    return validation._issues(document["resourceType"], validation._model_errors(
        validation.get_fhir_model_class(document["resourceType"]), document))


def test_a_remembered_valid_element_does_not_hide_errors_beside_it() -> None:
    assert resource_issues(observation()) == []
    broken = observation(valueQuantity={"value": "many"}, category=[{"coding": [{"system": 1}]}])
    issues = resource_issues(broken)
    assert issues == whole_model_issues(broken)
    assert {e for i in issues for e in i.expression} >= {"Observation.category[0].coding[0].system"}


def test_an_invalid_element_is_reported_every_time_it_is_seen() -> None:
    bad_reference = {"reference": "Patient/p1", "display": {"text": "not a string"}}
    for _ in range(3):
        issues = resource_issues(observation(subject=bad_reference))
        assert issues and issues == whole_model_issues(observation(subject=bad_reference))


def test_a_resource_that_breaks_a_rule_of_its_own_is_caught_with_remembered_elements() -> None:
    assert resource_issues(observation()) == []
    both_values = observation(valueQuantity={"value": 1}, valueString="one")  # value[x] twice
    assert resource_issues(both_values) == whole_model_issues(both_values) != []
    unknown = observation(colour="red")
    assert [i.expression for i in resource_issues(unknown)] == [("Observation.colour",)]


def test_elements_are_remembered_by_type_and_value() -> None:
    code = {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]}
    assert resource_issues(observation(code=code)) == []
    assert (validation._shared_fields("Observation")["code"], orjson.dumps(code)) in validation._shared
    assert validation._shared_fields("Observation")["valueQuantity"].__name__ == "Quantity"
    assert "valueAge" not in validation._shared_fields("Observation")  # not a shared type: checked in place


def _nested_extension(depth: int) -> dict:
    extension: dict = {"url": "http://example.org/e", "valueString": "x"}
    for _ in range(depth):
        extension = {"url": "http://example.org/e", "extension": [extension]}
    return extension


OBSERVATION_BASE = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}


@pytest.mark.parametrize("resource", [
    {**OBSERVATION_BASE, "contained": [{"resourceType": "Nope"}]},
    {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Nope"}}]},
    {"resourceType": "Parameters", "parameter": [{"name": "x", "resource": {"resourceType": "Nope"}}]},
    {**OBSERVATION_BASE, "extension": [_nested_extension(300)]},
], ids=["contained", "bundle-entry", "parameters", "deep-extensions"])
def test_a_nested_resource_of_unknown_type_or_a_document_nested_too_deeply_is_an_error_not_a_crash(
        resource: dict) -> None:
    """The models raise KeyError and RecursionError for these: an issue naming the resource, never a 500."""
    issues = validation.resource_issues(resource)
    assert issues and issues[0].severity == "error"
    assert issues[0].expression == (resource["resourceType"],)


def test_the_memo_of_checked_elements_is_bounded_by_the_json_it_holds() -> None:
    """Each instance costs about a hundred times its JSON: long elements are not kept, and the
    memo is emptied before its JSON passes the cap."""
    for n in range(3000):
        component = {"code": {"text": f"c{n}" + "x" * 400}, "valueInteger": n}
        assert validation.resource_issues({**OBSERVATION_BASE, "component": [component]}) == []
        assert validation._shared_json[0] <= validation._SHARED_JSON_KEPT + validation._SHARED_ITEM_MAX
    assert all(len(blob) <= validation._SHARED_ITEM_MAX for _, blob in validation._shared)
