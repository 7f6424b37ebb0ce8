"""Conformance to the fhirfus profiles (fhirfus.domain.profiles): each constraint kind, the claim rules,
the hook into the write path, and every resource the mappings and the scorer produce.
"""

from __future__ import annotations

import copy
import csv
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirfus.domain import profiles, rules, twstrs
from fhirfus.errors import BusinessRuleViolation, Issue
from fhirfus.ingest.mapping.engine import map_rows
from fhirfus.ingest.mapping.spec import load_spec
from tests.domain.test_twstrs_scoring import ANSWERS, nested
from tests.fhir.test_core_profiles import HEART_RATE

BASE = profiles.BASE
PROCEDURE = f"{BASE}mrgfus-procedure"
CONDITION = f"{BASE}cd-condition"
RESPONSE = f"{BASE}twstrs-questionnaire-response"
SCORE = f"{BASE}twstrs-score-observation"
LATERALITY = f"{BASE}laterality"
TARGET_SYSTEM = "https://fhirfus.org/fhir/CodeSystem/mrgfus-target"
SUBTYPE_SYSTEM = "https://fhirfus.org/fhir/CodeSystem/cd-subtype"
SCT = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
SITE_A = Path(__file__).resolve().parents[3] / "shared" / "data" / "site-registry" / "example-site-a.csv"
EXPECTED_PROFILES = {"Procedure": PROCEDURE, "QuestionnaireResponse": RESPONSE, "Condition": CONDITION}


def left() -> dict:
    return {"url": LATERALITY, "valueCodeableConcept": {"coding": [{"system": SCT, "code": "419161000"}]}}


def procedure() -> dict:
    return {
        "resourceType": "Procedure", "meta": {"profile": [PROCEDURE]}, "status": "completed",
        "code": {"coding": [{"system": "https://fhirfus.org/fhir/CodeSystem/procedure", "code": "mrgfus-ablation"},
                            {"system": "http://www.ama-assn.org/go/cpt", "code": "0398T"}]},
        "subject": {"reference": "Patient/p1"}, "performedDateTime": "2022-03-15",
        "bodySite": [{"coding": [{"system": TARGET_SYSTEM, "code": "pallidothalamic-tract"}], "extension": [left()]},
                     {"coding": [{"system": TARGET_SYSTEM, "code": "vo-complex"}]}],
    }


def condition() -> dict:
    return {
        "resourceType": "Condition", "meta": {"profile": [CONDITION]}, "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": ICD10, "code": "G24.3"}, {"system": SUBTYPE_SYSTEM, "code": "laterocollis"}]},
    }


def response() -> dict:
    return {**nested(), "meta": {"profile": [RESPONSE]}}


def score() -> dict:
    return twstrs.score_observations(nested(), "QuestionnaireResponse/r1")[0]


def issues_of(resource: dict) -> list[Issue]:
    return profiles.profile_issues(resource)


def errors_at(resource: dict) -> list[str]:
    """Expressions of the profile errors (warnings excluded)."""
    return [e for i in issues_of(resource) if i.severity == "error" for e in i.expression]


def synthetic(*elements: dict, resource_type: str = "Procedure") -> profiles.Profile:
    """A throw-away differential, to test one constraint kind in isolation."""
    return profiles.parse_profile({
        "resourceType": "StructureDefinition", "url": f"{BASE}test", "version": "1", "name": "Test",
        "kind": "resource", "type": resource_type,
        "differential": {"element": [{"id": resource_type, "path": resource_type}, *elements]},
    })


# --- the fhirfus profiles and ValueSets load --------------------------------------------------------


def test_every_fhirfus_profile_is_understood() -> None:
    loaded = profiles.profiles()
    assert {PROCEDURE, CONDITION, RESPONSE, SCORE, LATERALITY} <= set(loaded)


def test_every_fhirfus_binding_of_the_profiles_is_enumerable() -> None:
    bound = {e.binding[1] for p in profiles.profiles().values() for e in p.elements.values()
             if e.binding and e.binding[1].startswith(profiles.VALUESET_BASE)}
    assert bound and all(profiles.valuesets()[url] is not None for url in bound)


@pytest.mark.parametrize("make", [procedure, condition, response, score], ids=lambda f: f.__name__)
def test_conformant_resources_have_no_issues(make: Any) -> None:
    assert issues_of(make()) == []


# --- cardinality ------------------------------------------------------------------------------------


def test_missing_required_element_is_an_error_naming_the_profile() -> None:
    resource = procedure()
    del resource["bodySite"]
    [issue] = issues_of(resource)
    assert issue.expression == ("Procedure.bodySite",)
    assert issue.code == "required" and PROCEDURE in issue.diagnostics


def test_missing_required_choice_element() -> None:
    resource = procedure()
    del resource["performedDateTime"]
    assert errors_at(resource) == ["Procedure.performed[x]"]


def test_nested_minimum_applies_per_instance_of_the_parent() -> None:
    profile = synthetic({"id": "Procedure.bodySite.coding", "path": "Procedure.bodySite.coding", "min": 1})
    resource = procedure()
    resource["bodySite"].append({"text": "somewhere"})
    [issue] = profiles.validate(resource, profile)
    assert issue.expression == ("Procedure.bodySite[2].coding",)
    assert profiles.validate(procedure(), profile) == []
    del resource["bodySite"]
    assert profiles.validate(resource, profile) == []  # nothing is required under an absent parent


def test_slice_maximum_counts_only_the_slice() -> None:
    resource = condition()
    resource["code"]["coding"].append({"system": ICD10, "code": "G24.3"})
    [issue] = issues_of(resource)
    assert issue.expression == ("Condition.code.coding",) and "icd10" in issue.diagnostics
    other = condition()
    other["code"]["coding"].append({"system": SUBTYPE_SYSTEM, "code": "retrocollis"})  # unbounded slice
    assert issues_of(other) == []


def test_extension_slice_maximum_by_url() -> None:
    resource = procedure()
    resource["bodySite"][0]["extension"].append(left())
    assert errors_at(resource) == ["Procedure.bodySite[0].extension"]
    unrelated = procedure()
    unrelated["bodySite"][0]["extension"].append({"url": "http://example.org/other", "valueString": "x"})
    assert issues_of(unrelated) == []  # open slicing: other extensions are fine


def test_maximum_zero_inside_an_extension_profile() -> None:
    resource = procedure()
    resource["bodySite"][0]["extension"][0]["extension"] = [{"url": "x", "valueString": "y"}]
    assert errors_at(resource) == ["Procedure.bodySite[0].extension[0].extension"]


# --- choice types and closed slicing ------------------------------------------------------------------


def test_extension_value_type_comes_from_the_extension_profile() -> None:
    resource = procedure()
    resource["bodySite"][0]["extension"][0] = {"url": LATERALITY, "valueCoding": {"system": SCT, "code": "419161000"}}
    [issue] = issues_of(resource)
    assert issue.expression == ("Procedure.bodySite[0].extension[0].valueCoding",)
    assert LATERALITY in issue.diagnostics and "valueCodeableConcept" in issue.diagnostics


def test_extension_without_a_value_is_an_error() -> None:
    resource = procedure()
    resource["bodySite"][0]["extension"][0] = {"url": LATERALITY}
    assert errors_at(resource) == ["Procedure.bodySite[0].extension[0].value[x]"]


def test_choice_type_outside_the_profile() -> None:
    resource = score()
    resource["effectivePeriod"] = {"start": resource.pop("effectiveDateTime")}
    assert errors_at(resource) == ["Observation.effectivePeriod"]


def test_closed_type_slicing_rejects_other_value_types() -> None:
    resource = score()
    del resource["valueQuantity"]
    resource["valueString"] = "48"
    found = errors_at(resource)
    assert "Observation.valueString" in found  # not in any slice of the closed slicing
    assert "Observation.value[x]" in found  # and the valueQuantity slice (min 1) is missing


# --- fixed and pattern ----------------------------------------------------------------------------------


def test_fixed_value_inside_a_choice_slice() -> None:
    resource = score()
    resource["valueQuantity"]["unit"] = "points"
    [issue] = issues_of(resource)
    assert issue.expression == ("Observation.valueQuantity.unit",) and issue.code == "value"
    assert "fixedString" in issue.diagnostics


def test_pattern_codeable_concept_needs_a_coding_with_its_system_and_code() -> None:
    resource = procedure()
    resource["code"]["coding"] = resource["code"]["coding"][1:]  # CPT only
    assert errors_at(resource) == ["Procedure.code"]


def test_pattern_coding_of_a_slice() -> None:
    resource = condition()
    resource["code"]["coding"][0]["code"] = "G24.9"  # an ICD-10 coding, so in the icd10 slice
    assert "Condition.code.coding[0]" in errors_at(resource)


def test_pattern_applies_to_every_repetition() -> None:
    resource = score()
    resource["category"].append({"coding": [{"system": "http://example.org", "code": "x"}]})
    assert errors_at(resource) == ["Observation.category[1]"]


# --- bindings -----------------------------------------------------------------------------------------


def test_required_binding_rejects_an_unknown_code_of_the_valueset_system() -> None:
    resource = score()
    resource["code"]["coding"][0]["code"] = "sum"
    found = issues_of(resource)
    assert [i.expression for i in found] == [("Observation.code.coding[0].code",), ("Observation.code",)]
    assert all(i.code == "code-invalid" for i in found)


def test_required_binding_needs_a_coding_from_the_valueset() -> None:
    resource = score()
    resource["code"]["coding"] = [{"system": "http://loinc.org", "code": "00000-0"}]
    [issue] = issues_of(resource)
    assert issue.expression == ("Observation.code",) and "ValueSet/twstrs" in issue.diagnostics


def test_required_binding_on_a_coding_slice() -> None:
    resource = condition()
    resource["code"]["coding"][1]["code"] = "tremor"
    assert errors_at(resource) == ["Condition.code.coding[1].code", "Condition.code.coding[1]"]


def test_extensible_binding_warns_without_a_valueset_code_and_rejects_a_bad_one() -> None:
    resource = procedure()
    resource["bodySite"][1]["coding"] = [{"system": SCT, "code": "00000000"}]
    [issue] = issues_of(resource)
    assert (issue.severity, issue.expression) == ("warning", ("Procedure.bodySite[1]",))
    resource["bodySite"][1]["coding"] = [{"system": TARGET_SYSTEM, "code": "stn"}]
    assert errors_at(resource) == ["Procedure.bodySite[1].coding[0].code"]


def test_bindings_to_valuesets_outside_fhirfus_are_not_checked() -> None:
    resource = procedure()
    resource["bodySite"][0]["extension"][0]["valueCodeableConcept"] = {"coding": [{"system": SCT, "code": "1"}]}
    assert issues_of(resource) == []  # laterality binds HL7's bodysite-laterality (extensible)


# --- invariants -----------------------------------------------------------------------------------------


def test_invariant_cd_1_needs_g24_3() -> None:
    resource = condition()
    resource["code"]["coding"] = resource["code"]["coding"][1:]
    [issue] = issues_of(resource)
    assert (issue.code, issue.expression) == ("invariant", ("Condition",))
    assert "cd-1" in issue.diagnostics


def test_invariant_twstrs_1_needs_the_twstrs_questionnaire() -> None:
    resource = response()
    resource["questionnaire"] = "http://example.org/Questionnaire/other"
    [issue] = issues_of(resource)
    assert "twstrs-1" in issue.diagnostics


# Every data type Observation.value[x] may carry, with one instance of it.
VALUE_TYPES = {
    "Quantity": {"value": 1}, "CodeableConcept": {"text": "x"}, "string": "x", "boolean": True, "integer": 1,
    "Range": {"low": {"value": 1}}, "Ratio": {"numerator": {"value": 1}}, "time": "10:00:00",
    "dateTime": "2024", "Period": {"start": "2024"},
    "SampledData": {"origin": {"value": 0}, "period": 1, "dimensions": 1},
}


def _typed_invariant_profile(fhir_type: str) -> profiles.Profile:
    return synthetic({"id": "Observation.value[x]", "path": "Observation.value[x]", "constraint": [
        {"key": "t-1", "severity": "error", "human": "typed", "expression": f"$this is {fhir_type}"}]},
        resource_type="Observation")


@pytest.mark.parametrize("fhir_type", sorted(VALUE_TYPES))
def test_an_invariant_on_a_choice_element_sees_the_data_type_its_key_carries(fhir_type: str) -> None:
    """``effectiveDateTime: "2024"`` is a dateTime to ``($this as dateTime)`` (vs-1), not an untyped string."""
    key = "value" + fhir_type[:1].upper() + fhir_type[1:]
    resource = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, key: VALUE_TYPES[fhir_type]}
    assert profiles.validate(resource, _typed_invariant_profile(fhir_type)) == []
    other = "string" if fhir_type != "string" else "boolean"
    [issue] = profiles.validate(resource, _typed_invariant_profile(other))
    assert (issue.code, issue.expression) == ("invariant", (f"Observation.{key}",))


@pytest.mark.parametrize(("effective", "refused"), [
    ({"effectiveDateTime": "2024"}, True), ({"effectiveDateTime": "2024-03"}, True),
    ({"effectiveDateTime": "2024-03-01"}, False), ({"effectivePeriod": {"start": "2024"}}, False),
])
def test_vital_signs_vs_1_refuses_an_effective_date_time_less_precise_than_a_day(effective: dict, refused: bool) -> None:
    resource = {k: v for k, v in copy.deepcopy(HEART_RATE).items() if not k.startswith("effective")} | effective
    errors = [i for i in rules.domain_issues(resource) if i.severity == "error"]
    assert [("vs-1" in i.diagnostics) for i in errors] == ([True] if refused else [])


def _variants() -> list[dict]:
    """Conditions and responses that meet, break or cannot be judged by cd-1 and twstrs-1."""
    out = [condition(), response()]
    for codings in ([], [{"system": ICD10, "code": "G24.8"}], [{"code": "G24.3"}], [{"system": ICD10}],
                    [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "G24.3"}]):
        out.append({**condition(), "code": {"coding": codings}})
    twstrs_url = response()["questionnaire"]
    for questionnaire in (f"{twstrs_url}|1994", f"{twstrs_url}x", "http://example.org/Questionnaire/other", None):
        variant = response()
        if questionnaire is None:
            del variant["questionnaire"]
        else:
            variant["questionnaire"] = questionnaire
        out.append(variant)
    return out


@pytest.mark.parametrize("resource", _variants())
def test_the_invariants_compiled_to_closures_answer_as_the_engine(resource: dict) -> None:
    """cd-1 and twstrs-1 run as closures (no engine context per resource); the engine, given each
    element as the closures are, is the reference."""
    for profile in profiles.profiles().values():
        for rule in profile.elements.values():
            path = ".".join(part.split(":")[0] for part in rule.id.split("."))
            for invariant in rule.invariants:
                engine = profiles.compile_expression(invariant.expression)
                for value in ([resource] if path == resource["resourceType"] else []):
                    assert profiles._invariant(invariant.expression, path)(value) == profiles.evaluate(engine, value)


def test_the_profile_invariants_are_compiled() -> None:
    """Both fhirfus invariants are in the compiled subset: a resource is not checked by the engine."""
    from fhirfus.fhirpath.compiler import ExpressionCompiler

    for profile in profiles.profiles().values():
        for rule in profile.elements.values():
            path = ".".join(part.split(":")[0] for part in rule.id.split("."))
            for invariant in rule.invariants:
                ExpressionCompiler(path.split(".")[0]).compile(invariant.expression, path)


# --- what a claim means ---------------------------------------------------------------------------------


def test_unknown_fhirfus_profile_is_an_error() -> None:
    resource = procedure()
    resource["meta"]["profile"] = [f"{BASE}mrgfus-session"]
    [issue] = issues_of(resource)
    assert issue.expression == ("Procedure.meta.profile[0]",) and "mrgfus-procedure" in issue.diagnostics


def test_unknown_version_is_an_error_and_the_known_version_validates() -> None:
    resource = procedure()
    resource["meta"]["profile"] = [f"{PROCEDURE}|9.9.9"]
    assert errors_at(resource) == ["Procedure.meta.profile[0]"]
    resource["meta"]["profile"] = [f"{PROCEDURE}|{profiles.profiles()[PROCEDURE].version}"]
    assert issues_of(resource) == []


def test_profile_of_another_resource_type_is_an_error() -> None:
    resource = procedure()
    resource["meta"]["profile"] = [CONDITION]
    assert errors_at(resource) == ["Procedure.meta.profile[0]"]


def test_other_profiles_are_ignored() -> None:
    resource = procedure()
    del resource["bodySite"]
    resource["meta"]["profile"] = ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-procedure"]
    assert issues_of(resource) == []
    del resource["meta"]
    assert issues_of(resource) == []


def test_unsupported_profile_constructs_fail_when_loaded() -> None:
    with pytest.raises(ValueError, match="unsupported discriminator"):
        synthetic({"id": "Procedure.note", "path": "Procedure.note",
                   "slicing": {"discriminator": [{"type": "exists", "path": "text"}], "rules": "open"}})
    with pytest.raises(ValueError, match="does not define its discriminator"):
        synthetic({"id": "Procedure.note", "path": "Procedure.note",
                   "slicing": {"discriminator": [{"type": "value", "path": "text"}], "rules": "open"}},
                  {"id": "Procedure.note:a", "path": "Procedure.note", "sliceName": "a"})
    with pytest.raises(ValueError, match="undefined slice"):
        synthetic({"id": "Procedure.note:a.text", "path": "Procedure.note.text", "min": 1})


# --- the write path -------------------------------------------------------------------------------------


def test_domain_issues_report_a_profile_violation_once() -> None:
    resource = procedure()
    resource["bodySite"][0]["coding"][0]["code"] = "stn"  # the target rule and the binding both see it
    found = [i for i in rules.domain_issues(resource) if i.severity == "error"]
    assert [i.expression for i in found] == [("Procedure.bodySite[0].coding[0].code",)]
    del resource["performedDateTime"]
    with pytest.raises(BusinessRuleViolation) as raised:
        rules.enforce(resource)
    assert raised.value.status == 422


def test_write_claiming_a_profile_is_checked(client: httpx.Client) -> None:
    client.put("/Patient/p1", json={"resourceType": "Patient", "id": "p1"})  # the procedures' subject
    resource = procedure()
    del resource["bodySite"]
    refused = client.post("/Procedure", json=resource)
    assert refused.status_code == 422
    issue = refused.json()["issue"][0]
    assert issue["expression"] == ["Procedure.bodySite"] and PROCEDURE in issue["diagnostics"]
    assert client.post("/Procedure", json=procedure()).status_code == 201
    resource["meta"]["profile"] = ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-procedure"]
    assert client.post("/Procedure", json=resource).status_code == 201


def test_validate_operation_reports_profile_issues(client: httpx.Client) -> None:
    resource = score()
    resource["valueQuantity"]["system"] = "http://example.org/units"
    outcome = client.post("/Observation/$validate", json=resource).json()
    assert ["Observation.valueQuantity.system"] in [i.get("expression") for i in outcome["issue"]]


# --- everything fhirfus produces conforms -----------------------------------------------------------------


def test_score_observations_claim_and_conform_to_their_profile() -> None:
    partial = copy.deepcopy(ANSWERS)
    del partial["pain"]["pain.usual"]
    for answers in (ANSWERS, partial):
        observations = twstrs.score_observations(nested(answers), "QuestionnaireResponse/r1")
        assert observations
        for observation in observations:
            assert observation["meta"]["profile"] == [SCORE]
            assert issues_of(observation) == []


@pytest.mark.skipif(not SITE_A.is_file(), reason=f"shared site registry file not found at {SITE_A}")
def test_every_resource_of_the_site_registry_mapping_conforms() -> None:
    with SITE_A.open(encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    result = map_rows(load_spec("site-registry"), rows, "A")
    assert result.errors == [] and result.bundles
    resources = [e["resource"] for b in result.bundles.values() for e in b["entry"]]
    assert set(EXPECTED_PROFILES) <= {r["resourceType"] for r in resources}
    for resource in resources:
        if resource["resourceType"] in EXPECTED_PROFILES:
            assert resource["meta"]["profile"] == [EXPECTED_PROFILES[resource["resourceType"]]]
        assert issues_of(resource) == [], resource
        if resource["resourceType"] == "QuestionnaireResponse":
            for observation in twstrs.score_observations(resource, "QuestionnaireResponse/r1"):
                assert issues_of(observation) == []
