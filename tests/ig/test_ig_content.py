"""The implementation-guide content under fhirfus/ig/ is valid FHIR and keeps the contracts of domain.md."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fhirfus.fhir.validation import resource_issues
from fhirfus.ig import IG_DIR

MAPPINGS = IG_DIR
FOLDERS = ("questionnaires", "terminology", "profiles", "searchparameters")
IG_FILES = sorted(path for folder in FOLDERS for path in (MAPPINGS / folder).glob("*.json"))
BASE = "https://fhirfus.org/fhir"


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


RESOURCES = [_load(path) for path in IG_FILES]


def _of_type(resource_type: str) -> list[dict]:
    return [r for r in RESOURCES if r["resourceType"] == resource_type]


def _canonical(url: str) -> dict:
    (resource,) = [r for r in RESOURCES if r.get("url") == url]
    return resource


def _items(entries: list[dict]) -> list[dict]:
    return [x for item in entries for x in [item, *_items(item.get("item", []))]]


def test_the_ig_folders_hold_content() -> None:
    assert {path.parent.name for path in IG_FILES} == set(FOLDERS)


@pytest.mark.parametrize("path", IG_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_ig_file_is_a_valid_fhir_resource(path: Path) -> None:
    assert resource_issues(_load(path)) == []


def test_every_canonical_and_version_is_unique() -> None:
    counts = Counter((r["url"], r.get("version")) for r in RESOURCES)
    assert [key for key, n in counts.items() if n > 1] == []


def test_every_resource_id_is_unique_within_its_type() -> None:
    counts = Counter((r["resourceType"], r["id"]) for r in RESOURCES)
    assert [key for key, n in counts.items() if n > 1] == []


def test_every_canonical_lives_under_the_fhirfus_base() -> None:
    for resource in RESOURCES:
        assert resource["url"] == f"{BASE}/{resource['resourceType']}/{resource['url'].rsplit('/', 1)[1]}"


# --- terminology ----------------------------------------------------------------------------------

CONTRACT_CODES = {
    "twstrs": {"total", "severity", "disability", "pain"},
    "procedure": {"mrgfus-ablation"},
    "mrgfus-target": {"pallidothalamic-tract", "vo-complex", "vim", "gpi"},
    "cd-subtype": {"rotational-torticollis", "laterocollis", "anterocollis", "retrocollis", "combined"},
    "adverse-event": {"headache", "vertigo", "nausea", "dysarthria", "ataxia", "paresthesia", "dysphagia"},
    "sonication-parameter": {
        "power",
        "energy",
        "duration",
        "peak-temperature",
        "skull-density-ratio",
        "sonication-count",
        "lesion-size",
        "target-coordinate-lateral",
        "target-coordinate-ap",
        "target-coordinate-vertical",
    },
    "site-security": set(),
}


@pytest.mark.parametrize("name", sorted(CONTRACT_CODES))
def test_codesystem_contains_the_contract_codes(name: str) -> None:
    codes = {c["code"] for c in _canonical(f"{BASE}/CodeSystem/{name}")["concept"]}
    assert codes >= CONTRACT_CODES[name]
    assert codes


@pytest.mark.parametrize("name", sorted(CONTRACT_CODES))
def test_codesystem_is_complete_active_and_counted(name: str) -> None:
    system = _canonical(f"{BASE}/CodeSystem/{name}")
    codes = [c["code"] for c in system["concept"]]
    assert (system["status"], system["content"], system["count"]) == ("active", "complete", len(set(codes)))
    assert len(codes) == len(set(codes))


@pytest.mark.parametrize("name", sorted(CONTRACT_CODES))
def test_each_codesystem_has_a_valueset_of_all_its_codes(name: str) -> None:
    value_set = _canonical(f"{BASE}/ValueSet/{name}")
    assert value_set["compose"]["include"] == [{"system": f"{BASE}/CodeSystem/{name}"}]
    assert _canonical(f"{BASE}/CodeSystem/{name}")["valueSet"] == value_set["url"]


def test_conceptmap_sources_are_codes_of_their_source_system() -> None:
    for concept_map in _of_type("ConceptMap"):
        for group in concept_map["group"]:
            codes = {c["code"] for c in _canonical(group["source"])["concept"]}
            assert {e["code"] for e in group["element"]} <= codes, concept_map["id"]


def test_conceptmaps_use_only_the_given_icd10_and_cpt_codes() -> None:
    targets = {
        (g["target"], t["code"])
        for m in _of_type("ConceptMap")
        for g in m["group"]
        for e in g["element"]
        for t in e["target"]
    }
    assert {code for system, code in targets if "icd-10" in system} == {"G24.3"}
    assert {code for system, code in targets if "cpt" in system} == {"0398T"}


# --- the TWSTRS Questionnaire ---------------------------------------------------------------------

RANGES = {
    "severity.rotation": 4,
    "severity.laterocollis": 3,
    "severity.anterocollis-retrocollis": 3,
    "severity.lateral-shift": 1,
    "severity.sagittal-shift": 1,
    "severity.duration": 5,
    "severity.sensory-tricks": 2,
    "severity.shoulder": 3,
    "severity.range-of-motion": 4,
    "severity.time": 4,
    "disability.work": 5,
    "disability.adl": 5,
    "disability.driving": 5,
    "disability.reading": 5,
    "disability.television": 5,
    "disability.outside": 5,
    "pain.usual": 10,
    "pain.best": 10,
    "pain.worst": 10,
    "pain.duration": 5,
    "pain.disability": 5,
}


def _twstrs() -> dict:
    return _canonical(f"{BASE}/Questionnaire/twstrs")


def _twstrs_items() -> dict[str, dict]:
    return {item["linkId"]: item for item in _items(_twstrs()["item"])}


def _extension(item: dict, suffix: str) -> Any:
    return next(
        next(v for k, v in e.items() if k.startswith("value")) for e in item["extension"] if e["url"].endswith(suffix)
    )


def test_twstrs_questionnaire_is_the_active_1994_version() -> None:
    assert (_twstrs()["version"], _twstrs()["status"]) == ("1994", "active")


def test_twstrs_groups_and_linkids_are_exactly_the_contract() -> None:
    groups = {g["linkId"]: [i["linkId"] for i in g["item"]] for g in _twstrs()["item"]}
    assert list(groups) == ["severity", "disability", "pain", "scores"]
    assert [x for g in ("severity", "disability", "pain") for x in groups[g]] == [
        *list(RANGES)[:3],
        "severity.anterocollis-retrocollis.direction",
        *list(RANGES)[3:],
    ]
    assert groups["scores"] == ["score.severity", "score.disability", "score.pain", "score.total"]


@pytest.mark.parametrize(("link_id", "maximum"), sorted(RANGES.items()))
def test_twstrs_integer_item_is_required_with_its_range(link_id: str, maximum: int) -> None:
    item = _twstrs_items()[link_id]
    assert (item["type"], item["required"]) == ("integer", True)
    assert (_extension(item, "/minValue"), _extension(item, "/maxValue")) == (0, maximum)


def test_twstrs_direction_is_a_coded_choice_asked_only_when_antero_retrocollis_is_present() -> None:
    item = _twstrs_items()["severity.anterocollis-retrocollis.direction"]
    assert item["type"] == "choice"
    assert [o["valueCoding"]["code"] for o in item["answerOption"]] == ["anterocollis", "retrocollis"]
    assert item["enableWhen"] == [
        {"question": "severity.anterocollis-retrocollis", "operator": ">", "answerInteger": 0}
    ]


def test_twstrs_scores_are_read_only_calculated_and_never_required() -> None:
    for link_id in ("score.severity", "score.disability", "score.pain", "score.total"):
        item = _twstrs_items()[link_id]
        assert (item["readOnly"], item["required"]) == (True, False)
        assert _extension(item, "sdc-questionnaire-calculatedExpression")["language"] == "text/fhirpath"


# --- profiles and search parameters ---------------------------------------------------------------

PROFILES = {
    "mrgfus-procedure": "Procedure",
    "twstrs-score-observation": "Observation",
    "cd-condition": "Condition",
    "twstrs-questionnaire-response": "QuestionnaireResponse",
}


@pytest.mark.parametrize(("name", "resource_type"), sorted(PROFILES.items()))
def test_profile_constrains_its_resource_with_a_differential_only(name: str, resource_type: str) -> None:
    profile = _canonical(f"{BASE}/StructureDefinition/{name}")
    assert (profile["kind"], profile["abstract"], profile["derivation"], profile["type"]) == (
        "resource",
        False,
        "constraint",
        resource_type,
    )
    assert profile["baseDefinition"] == f"http://hl7.org/fhir/StructureDefinition/{resource_type}"
    assert "snapshot" not in profile
    assert all(e["path"].split(".")[0] == resource_type for e in profile["differential"]["element"])


def test_fhirfus_valuesets_and_profiles_referenced_by_profiles_exist() -> None:
    urls = {r["url"] for r in RESOURCES}
    referenced = set()
    for profile in _of_type("StructureDefinition"):
        for element in profile["differential"]["element"]:
            referenced.add(element.get("binding", {}).get("valueSet"))
            for type_ in element.get("type", []):
                referenced.update(type_.get("profile", []) + type_.get("targetProfile", []))
    assert {url for url in referenced if url and url.startswith(BASE)} <= urls


def test_procedure_target_search_parameter_searches_body_site_tokens() -> None:
    parameter = _canonical(f"{BASE}/SearchParameter/procedure-target")
    assert (parameter["code"], parameter["base"], parameter["type"], parameter["expression"], parameter["status"]) == (
        "target",
        ["Procedure"],
        "token",
        "Procedure.bodySite",
        "active",
    )
