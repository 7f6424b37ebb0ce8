"""Specifications for required-binding checks (``fhirfus.fhir.bindings``)."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fhirfus.fhir.bindings import DATA_FILE, BindingViolation, check_required_bindings, resource_types

REPO = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = Path("/work/shared/data/fhir-r4-examples/spec-inline")
DEFINITIONS_DIR = Path("/tmp/medplum/package/dist/fhir/r4")
EXAMPLE_FILES = sorted(EXAMPLES_DIR.glob("*.json")) if EXAMPLES_DIR.is_dir() else []

# Official examples that genuinely violate a required binding, with the reason.
# Currently none: every one of the 146 spec examples passes.
KNOWN_VIOLATING_EXAMPLES: dict[str, str] = {}


def expressions(resource: dict[str, Any]) -> list[str]:
    """Locations of all violations, the usual thing to assert on."""
    return [violation.expression for violation in check_required_bindings(resource)]


def patient(**fields: Any) -> dict[str, Any]:
    """A minimal Patient with the given fields."""
    return {"resourceType": "Patient", "id": "p1", **fields}


def allergy_clinical_status(*codings: dict[str, str]) -> dict[str, Any]:
    """An AllergyIntolerance whose clinicalStatus (required CodeableConcept binding) has ``codings``."""
    return {
        "resourceType": "AllergyIntolerance",
        "patient": {"reference": "Patient/p1"},
        "clinicalStatus": {"coding": list(codings)},
    }


CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"


def test_invalid_patient_gender_is_flagged_at_patient_gender() -> None:
    [violation] = check_required_bindings(patient(gender="banana"))
    assert violation == BindingViolation(
        expression="Patient.gender",
        message=(
            "'banana' is not a valid code for Patient.gender "
            "(required binding http://hl7.org/fhir/ValueSet/administrative-gender)"
        ),
    )


@pytest.mark.parametrize("gender", ["male", "female", "other", "unknown"])
def test_valid_patient_gender_passes(gender: str) -> None:
    assert check_required_bindings(patient(gender=gender)) == []


def test_invalid_observation_status_is_flagged() -> None:
    observation = {"resourceType": "Observation", "status": "bogus", "code": {"text": "x"}}
    assert expressions(observation) == ["Observation.status"]


def test_backbone_element_code_is_checked_with_array_index() -> None:
    resource = patient(contact=[{"gender": "female"}, {"gender": "banana"}])
    assert expressions(resource) == ["Patient.contact[1].gender"]


def test_datatype_contact_point_system_is_checked() -> None:
    resource = patient(telecom=[{"system": "pigeon", "value": "coo"}])
    [violation] = check_required_bindings(resource)
    assert violation.expression == "Patient.telecom[0].system"
    assert "ContactPoint.system" in violation.message


def test_datatype_human_name_use_is_checked() -> None:
    resource = patient(name=[{"use": "official", "family": "Chalmers"}, {"use": "nick"}])
    assert expressions(resource) == ["Patient.name[1].use"]


def test_datatype_inside_backbone_element_is_checked() -> None:
    resource = patient(contact=[{"address": {"use": "holiday"}}])
    assert expressions(resource) == ["Patient.contact[0].address.use"]


def test_choice_type_is_resolved_to_its_datatype() -> None:
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "valueQuantity": {"value": 1, "comparator": "~"},
    }
    assert expressions(observation) == ["Observation.valueQuantity.comparator"]


def test_choice_type_inside_extension_is_checked() -> None:
    extension = {"url": "http://example.org/ext", "valueContactPoint": {"system": "pigeon"}}
    assert expressions(patient(extension=[extension])) == ["Patient.extension[0].valueContactPoint.system"]


def test_contained_resource_is_checked_with_its_own_type() -> None:
    practitioner = {"resourceType": "Practitioner", "id": "pr1", "gender": "banana"}
    [violation] = check_required_bindings(patient(contained=[practitioner]))
    assert violation.expression == "Patient.contained[0].gender"
    assert "Practitioner.gender" in violation.message


def test_bundle_entry_resource_is_checked() -> None:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": patient(gender="banana")}]}
    assert expressions(bundle) == ["Bundle.entry[0].resource.gender"]


def test_recursive_content_reference_is_followed() -> None:
    questionnaire = {
        "resourceType": "Questionnaire",
        "status": "draft",
        "item": [{"linkId": "1", "type": "group", "item": [{"linkId": "1.1", "type": "banana"}]}],
    }
    assert expressions(questionnaire) == ["Questionnaire.item[0].item[0].type"]


def test_coding_with_value_set_system_but_wrong_code_is_flagged() -> None:
    resource = allergy_clinical_status(
        {"system": CLINICAL, "code": "active"},
        {"system": CLINICAL, "code": "bogus"},
    )
    [violation] = check_required_bindings(resource)
    assert violation.expression == "AllergyIntolerance.clinicalStatus.coding[1].code"
    assert CLINICAL in violation.message


def test_coding_from_another_system_is_not_flagged() -> None:
    resource = allergy_clinical_status({"system": "http://snomed.info/sct", "code": "55561003"})
    assert check_required_bindings(resource) == []


def test_primitive_extension_sibling_is_ignored() -> None:
    resource = patient(gender="male", _gender={"extension": [{"url": "http://example.org/x", "valueCode": "banana"}]})
    assert check_required_bindings(resource) == []


def test_unknown_keys_are_ignored() -> None:
    assert check_required_bindings(patient(gender="male", favouriteColour="banana")) == []


def test_unknown_resource_type_yields_no_violations() -> None:
    assert check_required_bindings({"resourceType": "Banana", "gender": "banana"}) == []


def test_resource_types_are_the_concrete_r4_resources() -> None:
    types = resource_types()
    assert len(types) == 146
    assert {"Patient", "Observation", "Bundle", "Parameters"} <= types
    assert not {"Resource", "DomainResource", "MetadataResource", "SubscriptionStatus"} & types


def test_typical_resource_checks_well_under_a_millisecond() -> None:
    resource = patient(
        gender="male",
        name=[{"use": "official", "family": "Chalmers", "given": ["Peter"]}],
        telecom=[{"system": "phone", "value": "555", "use": "home"}],
        address=[{"use": "home", "type": "both", "city": "PleasantVille"}],
        contact=[{"gender": "female", "telecom": [{"system": "email", "value": "a@b.c"}]}],
    )
    check_required_bindings(resource)  # warm the lazy load
    runs = 200
    start = time.perf_counter()
    for _ in range(runs):
        check_required_bindings(resource)
    assert (time.perf_counter() - start) / runs < 0.001


def test_generated_data_file_is_small() -> None:
    assert DATA_FILE.stat().st_size < 1_500_000


def load_generator() -> ModuleType:
    """Import ``tools/gen_bindings.py`` (``tools`` is a script folder, not a package)."""
    spec = importlib.util.spec_from_file_location("gen_bindings", REPO / "tools" / "gen_bindings.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not DEFINITIONS_DIR.is_dir(), reason=f"FHIR definitions not unpacked at {DEFINITIONS_DIR}")
def test_generated_data_file_is_up_to_date_with_generator() -> None:
    generator = load_generator()
    assert generator.render(generator.build(DEFINITIONS_DIR)) == DATA_FILE.read_text(encoding="utf-8")


@pytest.mark.skipif(not EXAMPLE_FILES, reason=f"official examples folder {EXAMPLES_DIR} is absent")
@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda path: path.stem)
def test_official_example_has_no_binding_violations(path: Path) -> None:
    resource = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(resource, dict) or resource.get("resourceType") not in resource_types():
        pytest.skip(f"{path.name} is not a resource of a known R4 type")
    if path.name in KNOWN_VIOLATING_EXAMPLES:
        pytest.xfail(KNOWN_VIOLATING_EXAMPLES[path.name])
    assert check_required_bindings(resource) == []


def _walked_violations(resource: dict[str, Any]) -> list[BindingViolation]:
    from fhirfus.fhir.representation import keep_primitive
    from fhirfus.fhir.walk import walk

    found: list[BindingViolation] = []
    walk(resource, keep_primitive, found)
    return found


PLANTED: list[dict[str, Any]] = [
    patient(gender="banana", contact=[{"gender": "nope"}]),
    {"resourceType": "Observation", "status": "bogus", "code": {"text": "x"}, "subject": {"reference": "Medication/1"},
     "performer": [{"reference": "#nowhere"}, {"reference": "#me", "type": "Substance"}],
     "contained": [{"resourceType": "Patient", "id": "me", "gender": "other",
                    "generalPractitioner": [{"reference": "#me"}, {"reference": "#ghost"}]}]},
    {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Patient", "gender": "x", "managingOrganization": {"reference": "#org"},
                      "contained": [{"resourceType": "Organization", "id": "org"}]}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "subject": {"reference": "#org"}}},
    ]},
]


@pytest.mark.parametrize("resource", PLANTED + [json.loads(p.read_text()) for p in EXAMPLE_FILES],
                         ids=lambda r: str(r.get("resourceType")))
def test_the_typed_walk_finds_what_check_elements_finds(resource: dict[str, Any]) -> None:
    """Writes take binding and reference-target violations from the one typed walk of the rule
    families (``fhirfus.fhir.walk``); ``check_elements`` walks on its own. The same violations, in
    the same order, or a write would be refused (or let through) differently from ``$validate``."""
    from fhirfus.fhir.bindings import check_elements

    assert _walked_violations(resource) == check_elements(resource)


def test_the_planted_violations_are_found() -> None:
    """The comparison above has violations to compare: codes, targets and ``#id``s at every depth,
    a contained resource's references resolved in its container, a Bundle entry's in itself."""
    from fhirfus.fhir.bindings import check_elements

    assert [[v.expression for v in check_elements(r)] for r in PLANTED] == [
        ["Patient.gender", "Patient.contact[0].gender"],
        ["Observation.status", "Observation.subject.reference", "Observation.performer[0].reference",
         "Observation.performer[1].type", "Observation.contained[0].generalPractitioner[0].reference",
         "Observation.contained[0].generalPractitioner[1].reference"],
        ["Bundle.entry[0].resource.gender", "Bundle.entry[1].resource.subject.reference"],
    ]
