"""TWSTRS scoring and answer checks (fhirfus.domain.twstrs), with hand-computed expectations.

The reference response (``nested()``) answers every item:
  severity   rotation 3, laterocollis 2, antero/retrocollis 1 (retrocollis), lateral shift 1,
             sagittal shift 0, duration 4 (x2 = 8), sensory tricks 1, shoulder 2, range 2, time 3
             -> 3 + 2 + 1 + 1 + 0 + 8 + 1 + 2 + 2 + 3 = 23
  disability work 3, adl 2, driving 4, reading 1, television 2, outside 3 -> 15
  pain       usual 5, best 2, worst 8 -> (8 + 2 + 2 x 5) / 4 = 5; duration 3, disability 2 -> 10
  total      23 + 15 + 10 = 48
"""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import fhirpathpy
import pytest
from fhirpathpy.models import models

from fhirfus.domain.twstrs import (
    TWSTRS_URL,
    is_twstrs_response,
    score_observations,
    score_response,
    validate_response,
)
from fhirfus.errors import BusinessRuleViolation
from fhirfus.fhir.validation import resource_issues
from fhirfus.ig import by_canonical

CD_SUBTYPE = "https://fhirfus.org/fhir/CodeSystem/cd-subtype"

ANSWERS: dict[str, dict[str, Any]] = {
    "severity": {
        "severity.rotation": 3,
        "severity.laterocollis": 2,
        "severity.anterocollis-retrocollis": 1,
        "severity.anterocollis-retrocollis.direction": {"system": CD_SUBTYPE, "code": "retrocollis"},
        "severity.lateral-shift": 1,
        "severity.sagittal-shift": 0,
        "severity.duration": 4,
        "severity.sensory-tricks": 1,
        "severity.shoulder": 2,
        "severity.range-of-motion": 2,
        "severity.time": 3,
    },
    "disability": {
        "disability.work": 3,
        "disability.adl": 2,
        "disability.driving": 4,
        "disability.reading": 1,
        "disability.television": 2,
        "disability.outside": 3,
    },
    "pain": {"pain.usual": 5, "pain.best": 2, "pain.worst": 8, "pain.duration": 3, "pain.disability": 2},
}


def _item(link_id: str, value: Any) -> dict:
    key = "valueCoding" if isinstance(value, dict) else "valueInteger"
    return {"linkId": link_id, "answer": [{key: value}]}


def _response(items: list[dict], questionnaire: str = TWSTRS_URL) -> dict:
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": questionnaire,
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "authored": "2023-03-14T10:00:00+01:00",
        "item": items,
    }


def nested(answers: dict[str, dict[str, Any]] = ANSWERS, **kw: Any) -> dict:
    """Items inside their groups, as the Questionnaire is built."""
    groups = [{"linkId": g, "item": [_item(k, v) for k, v in items.items()]} for g, items in answers.items()]
    return _response(groups, **kw)


def flat(answers: dict[str, dict[str, Any]] = ANSWERS, **kw: Any) -> dict:
    """Every question at the top level, as many site exports send it."""
    return _response([_item(k, v) for items in answers.values() for k, v in items.items()], **kw)


def changed(updates: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """ANSWERS with some items replaced by linkId (``None`` removes the item)."""
    answers = copy.deepcopy(ANSWERS)
    for items in answers.values():
        for link_id, value in updates.items():
            if link_id in items:
                if value is None:
                    del items[link_id]
                else:
                    items[link_id] = value
    return answers


# --- the reference responses themselves -------------------------------------------------------


@pytest.mark.parametrize("make", [nested, flat], ids=["nested", "flat"])
def test_the_reference_responses_are_valid_fhir(make: Any) -> None:
    assert resource_issues(make()) == []


# --- scores of a complete response ---------------------------------------------------------------


def test_complete_response_scores_severity_with_duration_counted_twice() -> None:
    assert score_response(nested()).severity == 23


def test_complete_response_scores_disability_as_the_plain_sum() -> None:
    assert score_response(nested()).disability == 15


def test_complete_response_scores_pain_from_pain_severity_duration_and_disability() -> None:
    assert score_response(nested()).pain == 10


def test_complete_response_total_is_the_sum_of_the_three_subscales() -> None:
    assert score_response(nested()).total == 48


def test_scores_name_the_questionnaire_version_they_were_computed_with() -> None:
    assert score_response(nested()).version == "1994"


def test_one_more_duration_point_adds_two_severity_points() -> None:
    assert score_response(nested(changed({"severity.duration": 5}))).severity == 25  # 23 - 8 + 10


def test_pain_severity_may_be_fractional_and_is_kept_exact() -> None:
    # usual 5, best 1, worst 8 -> (8 + 1 + 10) / 4 = 4.75; + duration 3 + disability 2 = 9.75
    scores = score_response(nested(changed({"pain.best": 1})))
    assert scores.pain == Decimal("9.75")
    assert scores.total == Decimal("47.75")  # 23 + 15 + 9.75


def test_all_zero_answers_score_zero_not_missing() -> None:
    zeros = {g: {k: (v if isinstance(v, dict) else 0) for k, v in items.items()} for g, items in ANSWERS.items()}
    scores = score_response(nested(zeros))
    assert (scores.severity, scores.disability, scores.pain, scores.total) == (0, 0, 0, 0)


def test_maximal_answers_reach_the_documented_maxima() -> None:
    questionnaire = by_canonical("questionnaires", "Questionnaire", TWSTRS_URL)["1994"]
    maxima = {
        item["linkId"]: ext["valueInteger"]
        for group in questionnaire["item"][:3]
        for item in group["item"]
        for ext in item.get("extension", [])
        if ext["url"].endswith("/maxValue")
    }
    answers = {g: {k: maxima.get(k, v) for k, v in items.items()} for g, items in ANSWERS.items()}
    scores = score_response(nested(answers))
    assert (scores.severity, scores.disability, scores.pain, scores.total) == (35, 30, 20, 85)


# --- incomplete responses -------------------------------------------------------------------------


def test_incomplete_severity_has_no_severity_score_and_no_total() -> None:
    scores = score_response(nested(changed({"severity.time": None})))
    assert scores.severity is None
    assert scores.total is None


def test_incomplete_severity_keeps_the_complete_disability_and_pain_scores() -> None:
    scores = score_response(nested(changed({"severity.time": None})))
    assert (scores.disability, scores.pain) == (15, 10)


def test_an_item_with_an_empty_answer_list_counts_as_unanswered() -> None:
    response = nested()
    response["item"][2]["item"][0]["answer"] = []  # pain.usual
    scores = score_response(response)
    assert scores.pain is None and scores.total is None and scores.severity == 23


def test_the_direction_is_not_needed_for_the_severity_score() -> None:
    assert score_response(nested(changed({"severity.anterocollis-retrocollis.direction": None}))).severity == 23


def test_computed_scores_are_not_required_in_a_response() -> None:
    assert validate_response(nested()) == []


def test_scores_sent_by_a_client_are_ignored_and_recomputed() -> None:
    response = nested()
    response["item"].append(
        {"linkId": "scores", "item": [{"linkId": "score.total", "answer": [{"valueDecimal": 12.5}]}]}
    )
    assert validate_response(response) == []
    assert score_response(response).total == 48


# --- flat and nested items ------------------------------------------------------------------------


def test_flat_items_score_the_same_as_nested_items() -> None:
    assert score_response(flat()) == score_response(nested())


def test_flat_response_is_valid() -> None:
    assert validate_response(flat()) == []


def test_an_item_in_the_wrong_group_is_an_issue_naming_its_linkid() -> None:
    response = nested()
    response["item"][2]["item"].append(_item("disability.work", 3))  # into the pain group
    del response["item"][1]["item"][0]
    (issue,) = validate_response(response)
    assert "disability.work" in issue.diagnostics
    assert issue.expression == ("QuestionnaireResponse.item[2].item[5].linkId",)


def test_an_item_answered_twice_is_an_issue() -> None:
    response = flat()
    response["item"].append(_item("severity.rotation", 2))
    (issue,) = validate_response(response)
    assert "severity.rotation" in issue.diagnostics and "more than once" in issue.diagnostics


# --- invalid answers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("link_id", "value", "group", "index"),
    [
        ("severity.rotation", 5, 0, 0),  # 0-4
        ("severity.rotation", -1, 0, 0),
        ("pain.usual", 11, 2, 0),  # 0-10
        ("disability.work", 6, 1, 0),  # 0-5
    ],
)
def test_an_out_of_range_answer_is_an_issue_naming_linkid_and_element(
    link_id: str, value: int, group: int, index: int
) -> None:
    response = nested(changed({link_id: value}))
    (issue,) = validate_response(response)
    assert link_id in issue.diagnostics and str(value) in issue.diagnostics
    assert issue.code == "value"
    assert issue.expression == (f"QuestionnaireResponse.item[{group}].item[{index}].answer[0].valueInteger",)


def test_an_unknown_linkid_is_an_issue() -> None:
    response = nested()
    response["item"][0]["item"].append(_item("severity.tremor", 1))
    (issue,) = validate_response(response)
    assert "severity.tremor" in issue.diagnostics
    assert issue.expression == ("QuestionnaireResponse.item[0].item[11].linkId",)


def test_a_string_where_an_integer_is_expected_is_an_issue() -> None:
    response = nested()
    response["item"][1]["item"][2]["answer"] = [{"valueString": "4"}]  # disability.driving
    (issue,) = validate_response(response)
    assert "disability.driving" in issue.diagnostics and "valueInteger" in issue.diagnostics
    assert issue.expression == ("QuestionnaireResponse.item[1].item[2].answer[0].valueString",)


def test_a_decimal_where_an_integer_is_expected_is_an_issue() -> None:
    response = nested()
    response["item"][1]["item"][2]["answer"] = [{"valueDecimal": 2.5}]
    (issue,) = validate_response(response)
    assert "disability.driving" in issue.diagnostics


def test_a_direction_given_as_text_is_an_issue() -> None:
    response = nested()
    response["item"][0]["item"][3]["answer"] = [{"valueString": "retrocollis"}]
    (issue,) = validate_response(response)
    assert "severity.anterocollis-retrocollis.direction" in issue.diagnostics and "valueCoding" in issue.diagnostics
    assert issue.expression == ("QuestionnaireResponse.item[0].item[3].answer[0].valueString",)


def test_a_direction_outside_its_answer_options_is_an_issue() -> None:
    response = nested(
        changed({"severity.anterocollis-retrocollis.direction": {"system": CD_SUBTYPE, "code": "laterocollis"}})
    )
    (issue,) = validate_response(response)
    assert "laterocollis" in issue.diagnostics


def test_a_direction_coded_without_system_is_accepted() -> None:
    assert (
        validate_response(nested(changed({"severity.anterocollis-retrocollis.direction": {"code": "anterocollis"}})))
        == []
    )


def test_two_answers_to_one_item_are_an_issue() -> None:
    response = nested()
    response["item"][0]["item"][0]["answer"].append({"valueInteger": 2})
    (issue,) = validate_response(response)
    assert "severity.rotation" in issue.diagnostics


def test_scoring_an_invalid_response_raises_a_business_rule_violation_with_every_issue() -> None:
    response = nested(changed({"severity.rotation": 5, "pain.usual": 11}))
    with pytest.raises(BusinessRuleViolation) as raised:
        score_response(response)
    assert raised.value.status == 422
    assert [i.expression for i in raised.value.issues] == [
        ("QuestionnaireResponse.item[0].item[0].answer[0].valueInteger",),
        ("QuestionnaireResponse.item[2].item[0].answer[0].valueInteger",),
    ]


def test_a_response_without_subject_or_authored_is_an_issue() -> None:
    response = nested()
    del response["subject"], response["authored"]
    assert [i.expression for i in validate_response(response)] == [
        ("QuestionnaireResponse.subject",),
        ("QuestionnaireResponse.authored",),
    ]


# --- questionnaire versions -----------------------------------------------------------------------


def test_a_version_suffix_on_the_canonical_is_accepted() -> None:
    response = nested(questionnaire=f"{TWSTRS_URL}|1994")
    assert validate_response(response) == []
    assert score_response(response).total == 48


def test_an_unknown_version_is_an_issue_on_the_questionnaire_element() -> None:
    (issue,) = validate_response(nested(questionnaire=f"{TWSTRS_URL}|2016"))
    assert "2016" in issue.diagnostics
    assert issue.expression == ("QuestionnaireResponse.questionnaire",)


def test_scoring_an_unknown_version_raises() -> None:
    with pytest.raises(BusinessRuleViolation):
        score_response(nested(questionnaire=f"{TWSTRS_URL}|2016"))


def test_another_questionnaire_is_not_a_twstrs_response() -> None:
    response = nested(questionnaire="https://example.org/Questionnaire/phq-9")
    assert not is_twstrs_response(response)
    assert validate_response(response)[0].expression == ("QuestionnaireResponse.questionnaire",)


# --- score observations ---------------------------------------------------------------------------


def _by_code(observations: list[dict]) -> dict[str, dict]:
    return {o["code"]["coding"][0]["code"]: o for o in observations}


def test_observations_carry_each_score_as_a_ucum_score_quantity() -> None:
    values = {
        code: o["valueQuantity"]
        for code, o in _by_code(score_observations(nested(), "QuestionnaireResponse/r1")).items()
    }
    assert values["total"] == {"value": 48, "unit": "{score}", "system": "http://unitsofmeasure.org", "code": "{score}"}
    assert {code: q["value"] for code, q in values.items()} == {
        "total": 48,
        "severity": 23,
        "disability": 15,
        "pain": 10,
    }


def test_observations_are_derived_from_the_response_with_its_subject_and_authored_time() -> None:
    for observation in score_observations(nested(), "QuestionnaireResponse/r1"):
        assert observation["derivedFrom"] == [{"reference": "QuestionnaireResponse/r1"}]
        assert observation["subject"] == {"reference": "Patient/p1"}
        assert observation["effectiveDateTime"] == "2023-03-14T10:00:00+01:00"


def test_observations_are_final_survey_observations_coded_in_the_twstrs_system() -> None:
    for observation in score_observations(nested(), "QuestionnaireResponse/r1"):
        assert observation["status"] == "final"
        assert observation["category"][0]["coding"][0]["code"] == "survey"
        assert observation["code"]["coding"][0]["system"] == "https://fhirfus.org/fhir/CodeSystem/twstrs"


def test_observations_exist_only_for_scores_that_exist() -> None:
    observations = score_observations(nested(changed({"severity.time": None})), "QuestionnaireResponse/r1")
    assert sorted(_by_code(observations)) == ["disability", "pain"]


def test_a_fractional_pain_score_is_a_decimal_quantity() -> None:
    observations = _by_code(score_observations(nested(changed({"pain.best": 1})), "QuestionnaireResponse/r1"))
    assert observations["pain"]["valueQuantity"]["value"] == 9.75


def test_observations_are_valid_fhir() -> None:
    for observation in score_observations(nested(), "QuestionnaireResponse/r1"):
        assert resource_issues(observation) == []


def test_observations_of_an_invalid_response_raise() -> None:
    with pytest.raises(BusinessRuleViolation):
        score_observations(nested(changed({"severity.rotation": 9})), "QuestionnaireResponse/r1")


# --- the Questionnaire's own FHIRPath agrees with the scorer --------------------------------------


def _calculated(response: dict) -> dict[str, Any]:
    """Evaluate the Questionnaire's variables and calculatedExpressions as a form filler would."""
    questionnaire = by_canonical("questionnaires", "Questionnaire", TWSTRS_URL)["1994"]
    env: dict[str, Any] = {"resource": response}
    for ext in questionnaire["extension"]:
        expression = ext["valueExpression"]
        env[expression["name"]] = fhirpathpy.evaluate(response, expression["expression"], dict(env), models["r4"])
    scores = next(i for i in questionnaire["item"] if i["linkId"] == "scores")
    results = {}
    for item in scores["item"]:
        calc = next(e for e in item["extension"] if e["url"].endswith("calculatedExpression"))
        value = fhirpathpy.evaluate(response, calc["valueExpression"]["expression"], dict(env), models["r4"])
        results[item["code"][0]["code"]] = value[0] if value else None
    return results


@pytest.mark.parametrize(
    "answers",
    [
        ANSWERS,
        changed({"pain.best": 1}),
        changed({"severity.time": None}),
        changed({"pain.worst": None, "disability.adl": None}),
    ],
    ids=["complete", "fractional-pain", "no-severity", "severity-only"],
)
def test_questionnaire_calculated_expressions_agree_with_the_scorer(answers: dict) -> None:
    for response in (nested(answers), flat(answers)):
        assert _calculated(response) == score_response(response).by_code()


# --- a response read twice (domain rules, then derived scores) -------------------------------------------


def test_a_response_read_again_gives_the_same_answers_and_issues_unaffected_by_what_callers_did() -> None:
    from fhirfus.domain import questionnaire

    response = nested(changed({"severity.rotation": 9}))  # out of range: one issue
    definition = by_canonical_definition(response)
    first_answers, first_issues = questionnaire.read_answers(definition, response)
    first_answers.clear()
    first_issues.append(first_issues[0])
    answers, issues = questionnaire.read_answers(definition, copy.deepcopy(response))
    assert len(issues) == 1 and "severity.rotation" in issues[0].diagnostics
    assert "severity.rotation" not in answers and "severity.duration" in answers


def test_a_response_with_other_answers_is_read_anew() -> None:
    from fhirfus.domain import questionnaire

    definition = by_canonical_definition(nested())
    assert questionnaire.read_answers(definition, nested())[1] == []
    _, issues = questionnaire.read_answers(definition, nested(changed({"severity.rotation": 9})))
    assert [i.expression for i in issues] != []


def by_canonical_definition(response: dict) -> Any:
    """The questionnaire definition the response's scoring rules read."""
    from fhirfus.domain import twstrs

    rules, issues = twstrs._resolve(response)
    assert rules is not None, issues
    return rules.definition
