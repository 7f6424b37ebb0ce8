"""R4 core profiles named in meta.profile (the vital signs family, …) are applied on write."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import httpx
import pytest

from fhirfus.domain.profiles import core_profiles, implied_profiles, profile_issues
from tests.r4_definitions import R4_DEFINITIONS

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
REAL_DATA = sorted((SHARED / "synthea-r4-transaction-bundles").glob("*.json")) + sorted(
    (SHARED / "fhir-r4-examples").glob("*/*.json"))

CORE = "http://hl7.org/fhir/StructureDefinition/"
VITAL_SIGNS = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}


def component(code: str, value: float) -> dict:
    return {"code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "valueQuantity": {"value": value, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}


BLOOD_PRESSURE = {
    "resourceType": "Observation", "meta": {"profile": [f"{CORE}bp"]}, "status": "final",
    "category": [VITAL_SIGNS], "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
    "subject": {"reference": "Patient/p"}, "effectiveDateTime": "2024-05-01T10:00:00Z",
    "component": [component("8480-6", 120), component("8462-4", 80)],
}
HEART_RATE = {
    "resourceType": "Observation", "meta": {"profile": [f"{CORE}heartrate"]}, "status": "final",
    "category": [VITAL_SIGNS], "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    "subject": {"reference": "Patient/p"}, "effectiveDateTime": "2024-05-01T10:00:00Z",
    "valueQuantity": {"value": 72, "unit": "beats/minute", "system": "http://unitsofmeasure.org", "code": "/min"},
}


def errors(resource: dict) -> list[tuple[str, ...]]:
    return [i.expression for i in profile_issues(resource) if i.severity == "error"]


def test_the_vital_signs_family_is_known() -> None:
    for name in ("vitalsigns", "bp", "heartrate", "bodyweight", "bodyheight", "bmi", "bodytemp", "resprate", "oxygensat"):
        assert core_profiles()[f"{CORE}{name}"] is not None, name


@pytest.mark.parametrize("resource", [BLOOD_PRESSURE, HEART_RATE])
def test_a_conformant_vital_sign_passes(resource: dict) -> None:
    assert profile_issues(resource) == []


def test_a_blood_pressure_without_its_diastolic_component_is_refused() -> None:
    bad = copy.deepcopy(BLOOD_PRESSURE)
    bad["component"] = bad["component"][:1]
    found = [i for i in profile_issues(bad) if i.severity == "error"]
    assert {i.expression for i in found} == {("Observation.component",)}
    assert any("DiastolicBP" in i.diagnostics for i in found)


def test_the_base_vital_signs_profile_applies_too() -> None:
    bad = copy.deepcopy(BLOOD_PRESSURE)
    del bad["subject"]  # vitalsigns: subject 1..1
    assert ("Observation.subject",) in errors(bad)


def test_a_heart_rate_in_the_wrong_unit_is_refused() -> None:
    bad = copy.deepcopy(HEART_RATE)
    bad["valueQuantity"]["code"] = "Hz"
    assert errors(bad) == [("Observation.valueQuantity.code",)]


def test_a_profile_of_another_type_is_an_error_and_unknown_ones_are_ignored() -> None:
    patient = {"resourceType": "Patient", "meta": {"profile": [f"{CORE}bp"]}}
    assert errors(patient) == [("Patient.meta.profile[0]",)]
    for unknown in ("http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient", f"{CORE}no-such-profile"):
        assert profile_issues({"resourceType": "Patient", "meta": {"profile": [unknown]}}) == []


def test_a_core_profile_this_validator_cannot_read_is_a_warning() -> None:
    report = {"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "lipids"},
              "meta": {"profile": [f"{CORE}lipidprofile"]}}
    assert [(i.severity, i.expression) for i in profile_issues(report)] == [
        ("warning", ("DiagnosticReport.meta.profile[0]",))]


def test_a_non_conformant_vital_sign_is_not_stored(client: httpx.Client) -> None:
    bad = copy.deepcopy(BLOOD_PRESSURE)
    bad["component"] = bad["component"][:1]
    bad.pop("subject")
    response = client.post("/Observation", json=bad)
    assert response.status_code == 422
    assert ["Observation.component"] in [i["expression"] for i in response.json()["issue"]]


def warnings(resource: dict) -> list[tuple[str, ...]]:
    return [i.expression for i in profile_issues(resource) if i.severity == "warning"]


def test_a_vital_sign_is_checked_against_its_profile_without_claiming_it_as_warnings() -> None:
    unclaimed = {k: v for k, v in copy.deepcopy(HEART_RATE).items() if k != "meta"}
    assert profile_issues(unclaimed) == []
    unclaimed["valueQuantity"]["code"] = "Hz"  # the heartrate profile, implied by LOINC 8867-4
    assert errors(unclaimed) == [] and warnings(unclaimed) == [("Observation.valueQuantity.code",)]


def test_the_vital_signs_category_implies_the_vital_signs_profile() -> None:
    observation = {"resourceType": "Observation", "status": "final", "category": [VITAL_SIGNS], "code": {"text": "x"},
                   "effectiveDateTime": "2024-05-01", "valueQuantity": {"value": 1}}
    assert warnings(observation) == [("Observation.subject",)]
    assert profile_issues({**observation, "category": [{"text": "other"}]}) == []


def test_a_claimed_profile_stays_an_error_when_also_implied() -> None:
    bad = copy.deepcopy(HEART_RATE)
    bad["valueQuantity"]["code"] = "Hz"
    assert errors(bad) == [("Observation.valueQuantity.code",)] and warnings(bad) == []


@pytest.mark.skipif(not REAL_DATA, reason=f"shared data absent under {SHARED}")
def test_real_vital_signs_meet_the_profiles_they_imply() -> None:
    observations = []
    for path in REAL_DATA:
        document = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(document, dict) and document.get("resourceType") == "Bundle":
            observations += [e.get("resource") for e in document.get("entry", []) if isinstance(e, dict)]
        elif isinstance(document, dict):
            observations.append(document)
    vital = [o for o in observations if isinstance(o, dict) and implied_profiles(o)]
    assert len(vital) > 100
    assert [(o.get("id"), i.diagnostics) for o in vital for i in profile_issues(o)] == []


DEFINITIONS_DIR = R4_DEFINITIONS


@pytest.mark.skipif(not DEFINITIONS_DIR.is_dir(), reason=f"R4 definitions not unpacked at {DEFINITIONS_DIR}")
def test_the_generated_core_profiles_are_current() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_core_profiles", Path(__file__).resolve().parents[2] / "tools" / "gen_core_profiles.py")
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert generator.generate(DEFINITIONS_DIR) == json.loads(generator.OUTPUT.read_text())
