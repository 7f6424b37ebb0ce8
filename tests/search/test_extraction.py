"""Specification of search index extraction (fhirfus.search.extraction) and its parameter tables."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import fhirpathpy
import pytest
from fhirpathpy.models import models

from fhirfus.fhir.dates import UTC_MAX, UTC_MIN
from fhirfus.fhirpath.paths import uses_fast_path
from fhirfus.search.extraction import (
    CompositeValue,
    DateValue,
    IndexValues,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
    extract_index_values,
    normalize_string,
)
from fhirfus.search.registry import (
    SearchParam,
    add_custom_param,
    params_for,
    patient_compartment_params,
    remove_custom_param,
    stored_under,
)

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
SPEC_EXAMPLES = SHARED_DATA / "fhir-r4-examples" / "spec-inline"
SYNTHEA_BUNDLES = SHARED_DATA / "synthea-r4-transaction-bundles"

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def values_of(values: list[Any], param: str) -> list[Any]:
    return [v for v in values if v.param == param]


def observation(**elements: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": "obs", "status": "final", **elements}


def bp_component(code: str, value: float) -> dict[str, Any]:
    return {
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "valueQuantity": {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
    }


# --------------------------------------------------------------------------- parameter tables


def test_multi_base_parameter_keeps_only_its_own_type_branch() -> None:
    assert params_for("Observation")["patient"].expression == "Observation.subject.where(resolve() is Patient)"


def test_resource_base_parameters_apply_to_every_type_with_its_own_root() -> None:
    assert params_for("Binary")["_id"].expression == "Binary.id"
    assert params_for("Patient")["_lastUpdated"].expression == "Patient.meta.lastUpdated"


def test_composite_parameter_lists_component_codes_and_expressions() -> None:
    assert params_for("Observation")["code-value-quantity"].components == (
        ("code", "code"),
        ("value-quantity", "value.as(Quantity)"),
    )


def test_reference_parameter_lists_its_target_types() -> None:
    assert params_for("Observation")["subject"].targets == (
        "Device", "Group", "Location", "Patient",
    )


def test_unknown_resource_type_has_no_parameters() -> None:
    assert dict(params_for("NoSuchResource")) == {}


def test_patient_compartment_lists_linking_parameters() -> None:
    assert patient_compartment_params("Observation") == ("subject", "performer")
    assert patient_compartment_params("Organization") == ()


# --------------------------------------------------------------------------- general


def test_unknown_resource_type_gives_no_values() -> None:
    assert len(extract_index_values({"resourceType": "NoSuchResource", "id": "x"})) == 0


def test_resource_without_type_gives_no_values() -> None:
    assert len(extract_index_values({"id": "x"})) == 0


def test_extraction_does_not_modify_the_resource() -> None:
    resource = observation(valueQuantity={"value": 1.5}, component=[bp_component("8480-6", 120.0)])
    before = copy.deepcopy(resource)
    extract_index_values(resource)
    extract_index_values(resource, fast=False)
    assert resource == before


def test_same_value_reached_twice_is_indexed_once() -> None:
    coding = {"system": LOINC, "code": "1234-5"}
    values = extract_index_values(observation(code={"coding": [coding, coding]}))
    assert values_of(values.tokens, "code") == [TokenValue("code", LOINC, "1234-5", None)]


def test_custom_parameter_is_indexed_once_registered() -> None:
    add_custom_param("Patient", SearchParam("nickname", "string", "Patient.name.where(use='nickname').given"))
    try:
        patient = {"resourceType": "Patient", "name": [{"use": "nickname", "given": ["Bob"]}, {"given": ["Robert"]}]}
        assert [v.exact for v in values_of(extract_index_values(patient).strings, "nickname")] == ["Bob"]
    finally:
        remove_custom_param("Patient", "nickname")
    assert "nickname" not in params_for("Patient")


def test_custom_parameter_with_invalid_fhirpath_is_ignored_not_raised() -> None:
    add_custom_param("Basic", SearchParam("broken", "token", "Basic.code.where("))
    try:
        basic = {"resourceType": "Basic", "code": {"coding": [{"system": "urn:s", "code": "c"}]}}
        tokens = extract_index_values(basic).tokens
        assert values_of(tokens, "code") and not values_of(tokens, "broken")
    finally:
        remove_custom_param("Basic", "broken")


def test_plain_paths_choice_types_and_simple_filters_take_the_fast_path() -> None:
    assert uses_fast_path("Observation", "(Observation.effective as dateTime) | Observation.subject")
    assert uses_fast_path("Observation", "Observation.subject.where(resolve() is Patient)")
    assert uses_fast_path("Patient", "Patient.telecom.where(system='email')")


def test_expressions_with_other_functions_fall_back_to_fhirpathpy() -> None:
    assert not uses_fast_path("Bundle", "Bundle.entry[0].resource")
    assert not uses_fast_path("Patient", "Patient.deceased.exists() or Patient.deceased != false")


def test_fhirpathpy_fallback_result_is_indexed() -> None:
    expression = "Patient.name.given.first()"
    assert not uses_fast_path("Patient", expression)
    add_custom_param("Patient", SearchParam("first-given", "string", expression))
    try:
        patient = {"resourceType": "Patient", "name": [{"given": ["Ana", "Maria"]}]}
        assert [v.exact for v in values_of(extract_index_values(patient).strings, "first-given")] == ["Ana"]
    finally:
        remove_custom_param("Patient", "first-given")


@pytest.mark.parametrize("deceased, expected", [
    ({}, "false"),
    ({"deceasedBoolean": False}, "false"),
    ({"deceasedBoolean": True}, "true"),
    ({"deceasedDateTime": "2020-01-01"}, "true"),
])
def test_present_and_not_false_is_a_direct_lookup_that_agrees_with_fhirpathpy(deceased: dict, expected: str) -> None:
    assert uses_fast_path("Patient", "Patient.deceased.exists() and Patient.deceased != false")
    patient = {"resourceType": "Patient", **deceased}
    fast = values_of(extract_index_values(patient).tokens, "deceased")
    assert fast == values_of(extract_index_values(patient, fast=False).tokens, "deceased")
    assert fast == [TokenValue("deceased", None, expected, None)]


# --------------------------------------------------------------------------- tokens


def test_codeable_concept_gives_one_token_per_coding_with_its_text() -> None:
    code = {"coding": [{"system": LOINC, "code": "8867-4"}, {"system": "urn:x", "code": "hr"}], "text": "Heart rate"}
    assert values_of(extract_index_values(observation(code=code)).tokens, "code") == [
        TokenValue("code", LOINC, "8867-4", "Heart rate"),
        TokenValue("code", "urn:x", "hr", "Heart rate"),
    ]


def test_coding_without_concept_text_carries_its_display() -> None:
    code = {"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}]}
    assert values_of(extract_index_values(observation(code=code)).tokens, "code")[0].display_text == "Heart rate"


def test_text_only_concept_is_searchable_by_text() -> None:
    tokens = extract_index_values(observation(code={"text": "tired"})).tokens
    assert values_of(tokens, "code") == [TokenValue("code", None, None, "tired")]


def test_code_element_is_indexed_without_system() -> None:
    tokens = extract_index_values({"resourceType": "Patient", "gender": "female"}).tokens
    assert values_of(tokens, "gender") == [TokenValue("gender", None, "female", None)]


def test_boolean_is_indexed_as_true_or_false() -> None:
    tokens = extract_index_values({"resourceType": "Patient", "active": False}).tokens
    assert values_of(tokens, "active") == [TokenValue("active", None, "false", None)]


def test_identifier_is_indexed_by_system_and_value_with_type_text() -> None:
    identifier = {"system": "urn:oid:1.2.3", "value": "MRN-7", "type": {"text": "MRN"}}
    tokens = extract_index_values({"resourceType": "Patient", "identifier": [identifier]}).tokens
    assert values_of(tokens, "identifier") == [TokenValue("identifier", "urn:oid:1.2.3", "MRN-7", "MRN")]


def test_contact_point_is_indexed_by_value_only() -> None:
    telecom = [{"system": "phone", "value": "555-1234", "use": "home"}]
    tokens = extract_index_values({"resourceType": "Patient", "telecom": telecom}).tokens
    assert values_of(tokens, "telecom") == [TokenValue("telecom", None, "555-1234", None)]


def test_where_system_filter_keeps_only_matching_contact_points() -> None:
    telecom = [{"system": "phone", "value": "555-1234"}, {"system": "email", "value": "a@b.org"}]
    tokens = extract_index_values({"resourceType": "Patient", "telecom": telecom}).tokens
    assert [t.code for t in values_of(tokens, "email")] == ["a@b.org"]
    assert [t.code for t in values_of(tokens, "phone")] == ["555-1234"]


def test_meta_tags_are_indexed_for_every_type_and_id_is_not() -> None:
    meta = {"tag": [{"system": "urn:tags", "code": "study-a"}], "security": [{"system": "urn:sec", "code": "R"}]}
    tokens = extract_index_values({"resourceType": "Basic", "id": "b1", "meta": meta}).tokens
    assert values_of(tokens, "_id") == []  # searched on the resources table's own column
    assert values_of(tokens, "_tag") == [TokenValue("_tag", "urn:tags", "study-a", None)]
    assert values_of(tokens, "_security") == [TokenValue("_security", "urn:sec", "R", None)]


# --------------------------------------------------------------------------- strings


def test_normalized_string_is_lower_case_without_accents() -> None:
    assert normalize_string("Ångström MÜLLER") == "angstrom muller"


def test_patient_family_is_indexed_accent_insensitive() -> None:
    patient = {"resourceType": "Patient", "name": [{"family": "Müller"}]}
    assert values_of(extract_index_values(patient).strings, "family") == [StringValue("family", "muller", "Müller")]


def test_human_name_indexes_each_part_and_the_whole_name() -> None:
    name = {"prefix": ["Dr."], "given": ["Anna", "Maria"], "family": "Lopez", "suffix": ["PhD"]}
    strings = extract_index_values({"resourceType": "Patient", "name": [name]}).strings
    assert {s.exact for s in values_of(strings, "name")} == {
        "Lopez", "Anna", "Maria", "Dr.", "PhD", "Dr. Anna Maria Lopez PhD",
    }


def test_name_text_is_indexed() -> None:
    strings = extract_index_values({"resourceType": "Patient", "name": [{"text": "Anna Lopez"}]}).strings
    assert [s.exact for s in values_of(strings, "name")] == ["Anna Lopez"]


def test_address_indexes_each_part_and_its_text() -> None:
    address = {"line": ["1 Main St", "Apt 2"], "city": "Zürich", "postalCode": "8001", "country": "CH", "text": "1 Main St, Zürich"}
    strings = extract_index_values({"resourceType": "Patient", "address": [address]}).strings
    assert {s.exact for s in values_of(strings, "address")} == {
        "1 Main St", "Apt 2", "Zürich", "8001", "CH", "1 Main St, Zürich",
    }
    assert values_of(strings, "address-city") == [StringValue("address-city", "zurich", "Zürich")]


def test_codeable_concept_text_of_choice_value_is_indexed_as_string() -> None:
    strings = extract_index_values(observation(valueCodeableConcept={"text": "Positive"})).strings
    assert values_of(strings, "value-string") == [StringValue("value-string", "positive", "Positive")]


# --------------------------------------------------------------------------- dates


def test_choice_type_effective_datetime_gives_its_precision_range() -> None:
    dates = extract_index_values(observation(effectiveDateTime="2021-03-04")).dates
    assert values_of(dates, "date") == [DateValue("date", utc(2021, 3, 4), utc(2021, 3, 5))]


def test_choice_type_effective_period_gives_range() -> None:
    period = {"start": "2021-03-04T10:00:00+01:00", "end": "2021-03-05"}
    dates = extract_index_values(observation(effectivePeriod=period)).dates
    assert values_of(dates, "date") == [DateValue("date", utc(2021, 3, 4, 9), utc(2021, 3, 6))]


def test_period_without_end_is_open_ended() -> None:
    care_plan = {"resourceType": "CarePlan", "period": {"start": "2020"}}
    assert values_of(extract_index_values(care_plan).dates, "date") == [DateValue("date", utc(2020, 1, 1), UTC_MAX)]


def test_period_without_start_is_open_from_the_beginning() -> None:
    care_plan = {"resourceType": "CarePlan", "period": {"end": "2020"}}
    assert values_of(extract_index_values(care_plan).dates, "date") == [DateValue("date", UTC_MIN, utc(2021, 1, 1))]


def test_timing_events_each_give_a_range() -> None:
    timing = {"event": ["2021-01-01", "2021-02-01"]}
    dates = extract_index_values({"resourceType": "CarePlan", "activity": [{"detail": {"scheduledTiming": timing}}]}).dates
    assert values_of(dates, "activity-date") == [
        DateValue("activity-date", utc(2021, 1, 1), utc(2021, 1, 2)),
        DateValue("activity-date", utc(2021, 2, 1), utc(2021, 2, 2)),
    ]


def test_malformed_date_is_skipped_not_raised() -> None:
    assert values_of(extract_index_values(observation(effectiveDateTime="banana")).dates, "date") == []


def test_last_updated_is_not_extracted_it_is_a_column_of_every_resource() -> None:
    meta = {"lastUpdated": "2021-01-01T00:00:00.000Z"}
    assert values_of(extract_index_values({"resourceType": "Basic", "meta": meta}).dates, "_lastUpdated") == []


def test_instant_with_milliseconds_is_a_one_millisecond_range() -> None:
    procedure = {"resourceType": "AuditEvent", "recorded": "2021-01-01T00:00:00.000Z"}
    assert values_of(extract_index_values(procedure).dates, "date") == [
        DateValue("date", utc(2021, 1, 1), utc(2021, 1, 1, 0, 0, 0, 1000)),
    ]


# --------------------------------------------------------------------------- references


def test_observation_subject_reference_indexed_as_patient() -> None:
    references = extract_index_values(observation(subject={"reference": "Patient/123"})).references
    assert values_of(references, "subject") == [ReferenceValue("subject", "Patient", "123", "Patient/123")]


def test_where_resolve_is_patient_keeps_only_patient_references() -> None:
    to_patient = extract_index_values(observation(subject={"reference": "Patient/1"})).references
    to_group = extract_index_values(observation(subject={"reference": "Group/1"})).references
    assert values_of(to_patient, "patient") == [ReferenceValue("patient", "Patient", "1", "Patient/1")]
    assert values_of(to_group, "patient") == []


def test_absolute_reference_keeps_url_and_takes_type_and_id_from_it() -> None:
    url = "https://other.example/fhir/Patient/abc/_history/3"
    references = extract_index_values(observation(subject={"reference": url})).references
    assert values_of(references, "subject") == [ReferenceValue("subject", "Patient", "abc", url)]


def test_url_whose_segment_is_not_a_resource_type_keeps_only_the_url() -> None:
    url = "https://other.example/people/abc"
    references = extract_index_values(observation(subject={"reference": url})).references
    assert values_of(references, "subject") == [ReferenceValue("subject", None, None, url)]


def test_urn_uuid_reference_keeps_only_the_url() -> None:
    url = "urn:uuid:0f3a6b0e-1c1d-4b8a-9f00-8d1e4c2f1a10"
    references = extract_index_values(observation(subject={"reference": url})).references
    assert values_of(references, "subject") == [ReferenceValue("subject", None, None, url)]
    assert values_of(references, "patient") == []


def test_canonical_reference_keeps_only_the_url() -> None:
    canonical = "http://example.org/Questionnaire/phq-9|1.0"
    response = {"resourceType": "QuestionnaireResponse", "questionnaire": canonical}
    references = extract_index_values(response).references
    assert values_of(references, "questionnaire") == [ReferenceValue("questionnaire", None, None, canonical)]


def test_reference_by_identifier_only_keeps_the_identifier_and_no_url() -> None:
    subject = {"identifier": {"system": "urn:mrn", "value": "7"}}
    [value] = values_of(extract_index_values(observation(subject=subject)).references, "subject")
    assert (value.url, value.target_id, value.identifier_system, value.identifier_value) == ("", None, "urn:mrn", "7")


def test_choice_as_reference_ignores_the_codeable_concept_alternative() -> None:
    request = {"resourceType": "MedicationRequest", "medicationCodeableConcept": {"text": "aspirin"}}
    assert values_of(extract_index_values(request).references, "medication") == []
    request = {"resourceType": "MedicationRequest", "medicationReference": {"reference": "Medication/m1"}}
    assert values_of(extract_index_values(request).references, "medication") == [
        ReferenceValue("medication", "Medication", "m1", "Medication/m1"),
    ]


# --------------------------------------------------------------------------- numbers, quantities, uris


def test_observation_value_quantity_keeps_value_system_code_and_unit() -> None:
    quantity = {"value": 72, "unit": "beats/min", "system": UCUM, "code": "/min"}
    quantities = extract_index_values(observation(valueQuantity=quantity)).quantities
    assert values_of(quantities, "value-quantity") == [
        QuantityValue("value-quantity", Decimal(72), UCUM, "/min", "beats/min"),
    ]


def test_float_quantity_is_kept_as_its_shortest_decimal() -> None:
    quantities = extract_index_values(observation(valueQuantity={"value": 0.1})).quantities
    assert values_of(quantities, "value-quantity")[0].value == Decimal("0.1")


def test_money_is_indexed_as_quantity_with_iso_currency() -> None:
    charge = {"resourceType": "ChargeItem", "priceOverride": {"value": 40.5, "currency": "EUR"}}
    assert values_of(extract_index_values(charge).quantities, "price-override") == [
        QuantityValue("price-override", Decimal("40.5"), "urn:iso:std:iso:4217", "EUR", None),
    ]


def test_number_from_choice_decimal_is_indexed_and_range_is_skipped() -> None:
    prediction = [{"probabilityDecimal": 0.02}, {"probabilityRange": {"low": {"value": 1}}}]
    numbers = extract_index_values({"resourceType": "RiskAssessment", "prediction": prediction}).numbers
    assert values_of(numbers, "probability") == [NumberValue("probability", Decimal("0.02"))]


def test_meta_profile_is_indexed_as_uri() -> None:
    meta = {"profile": ["http://example.org/StructureDefinition/p"]}
    uris = extract_index_values({"resourceType": "Basic", "meta": meta}).uris
    assert values_of(uris, "_profile") == [UriValue("_profile", "http://example.org/StructureDefinition/p")]


# --------------------------------------------------------------------------- composites


def test_code_value_quantity_pairs_each_code_with_the_value() -> None:
    code = {"coding": [{"system": LOINC, "code": "8867-4"}]}
    quantity = {"value": 72, "system": UCUM, "code": "/min"}
    composites = extract_index_values(observation(code=code, valueQuantity=quantity)).composites
    assert values_of(composites, "code-value-quantity") == [
        CompositeValue(
            "code-value-quantity",
            (TokenValue("code", LOINC, "8867-4", None), QuantityValue("value-quantity", Decimal(72), UCUM, "/min", None)),
        )
    ]


def test_component_code_value_quantity_pairs_values_within_the_same_component() -> None:
    resource = observation(component=[bp_component("8480-6", 120), bp_component("8462-4", 80)])
    pairs = [
        (c.components[0].code, c.components[1].value)
        for c in values_of(extract_index_values(resource).composites, "component-code-value-quantity")
    ]
    assert pairs == [("8480-6", Decimal(120)), ("8462-4", Decimal(80))]


def test_combo_code_value_quantity_covers_the_observation_and_its_components() -> None:
    resource = observation(
        code={"coding": [{"system": LOINC, "code": "85354-9"}]},
        valueQuantity={"value": 1},
        component=[bp_component("8480-6", 120)],
    )
    composites = extract_index_values(resource).composites
    pairs = [
        (c.components[0].code, c.components[1].value)
        for code in stored_under("Observation", "combo-code-value-quantity") for c in values_of(composites, code)
    ]
    assert pairs == [("85354-9", Decimal(1)), ("8480-6", Decimal(120))]


def test_a_parameter_containing_another_whole_indexes_only_the_rest() -> None:
    # combo-code is Observation.code | Observation.component.code: both parts are other parameters
    assert stored_under("Observation", "combo-code") == ("combo-code", "code", "component-code")
    values = extract_index_values(observation(
        code={"coding": [{"system": LOINC, "code": "85354-9"}]}, component=[bp_component("8480-6", 120)]))
    assert values_of(values.tokens, "combo-code") == []
    assert [t.code for t in values_of(values.tokens, "code")] == ["85354-9"]
    assert [t.code for t in values_of(values.tokens, "component-code")] == ["8480-6"]


def test_parameters_with_the_same_expression_share_the_rows_of_the_first_code() -> None:
    assert stored_under("Patient", "phonetic") == ("phonetic", "name")
    assert stored_under("Patient", "name") == ("name",)
    values = extract_index_values({"resourceType": "Patient", "name": [{"family": "Jensen"}]})
    assert values_of(values.strings, "phonetic") == [] and values_of(values.strings, "name")


def test_reference_and_common_parameters_keep_their_own_rows() -> None:
    # Observation.patient is part of Observation.subject, but includes and compartments read it by code
    assert stored_under("Observation", "patient") == ("patient",)
    assert stored_under("Observation", "_tag") == ("_tag",)


def test_code_value_concept_pairs_code_with_the_concept_value() -> None:
    resource = observation(
        code={"coding": [{"system": LOINC, "code": "94500-6"}]},
        valueCodeableConcept={"coding": [{"system": "http://snomed.info/sct", "code": "260385009"}]},
    )
    (composite,) = values_of(extract_index_values(resource).composites, "code-value-concept")
    assert composite.components == (
        TokenValue("code", LOINC, "94500-6", None),
        TokenValue("value-concept", "http://snomed.info/sct", "260385009", None),
    )


def test_code_value_date_pairs_code_with_the_date_value() -> None:
    resource = observation(code={"coding": [{"system": LOINC, "code": "x"}]}, valueDateTime="2021-05")
    (composite,) = values_of(extract_index_values(resource).composites, "code-value-date")
    assert composite.components[1] == DateValue("value-date", utc(2021, 5, 1), utc(2021, 6, 1))


def test_composite_with_a_missing_component_gives_nothing() -> None:
    resource = observation(code={"coding": [{"system": LOINC, "code": "x"}]})
    assert extract_index_values(resource).composites == []


# --------------------------------------------------------------------------- official examples


def _spec_examples() -> list[dict[str, Any]]:
    if not SPEC_EXAMPLES.is_dir():
        pytest.skip(f"official R4 examples not found at {SPEC_EXAMPLES} (shared/ data absent)")
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(SPEC_EXAMPLES.glob("*.json"))]


def _synthea_resources() -> Iterator[dict[str, Any]]:
    if not SYNTHEA_BUNDLES.is_dir():
        pytest.skip(f"Synthea bundles not found at {SYNTHEA_BUNDLES} (shared/ data absent)")
    for path in sorted(SYNTHEA_BUNDLES.glob("*_*.json")):
        for entry in json.loads(path.read_text(encoding="utf-8"))["entry"]:
            yield entry["resource"]


_RESOLVE_STUB = {"userInvocationTable": {"resolve": {"fn": lambda refs: [], "arity": {0: []}}}}


def _fhirpathpy_rejects(resource: dict[str, Any], expression: str) -> bool:
    """fhirpathpy raises on ``as`` over several items, which R4 search expressions rely on."""
    try:
        fhirpathpy.evaluate(resource, expression, {"resource": resource}, models["r4"], _RESOLVE_STUB)
    except Exception:
        return True
    return False


def _by_param(values: IndexValues, skip: set[str]) -> dict[str, set[Any]]:
    grouped: dict[str, set[Any]] = {}
    for name in ("tokens", "strings", "dates", "references", "numbers", "quantities", "uris", "composites"):
        for value in getattr(values, name):
            if value.param not in skip:
                grouped.setdefault(value.param, set()).add(value)
    return grouped


def _assert_fast_path_agrees(resource: dict[str, Any]) -> None:
    params = params_for(resource["resourceType"])
    skip = {p.code for p in params.values() if p.expression and _fhirpathpy_rejects(resource, p.expression)}
    fast = _by_param(extract_index_values(resource), skip)
    slow = _by_param(extract_index_values(resource, fast=False), skip)
    assert fast == slow, resource.get("id")


def test_every_official_example_extracts_without_error() -> None:
    examples = _spec_examples()
    extracted = [extract_index_values(resource) for resource in examples]
    assert len(examples) > 100
    assert sum(len(values) for values in extracted) > 1000


def test_fast_path_agrees_with_fhirpathpy_on_official_examples() -> None:
    for resource in _spec_examples()[::3]:
        _assert_fast_path_agrees(resource)


def test_fast_path_agrees_with_fhirpathpy_on_synthea_sample() -> None:
    resources = list(_synthea_resources())
    for resource in resources[::25]:
        _assert_fast_path_agrees(resource)



def test_custom_parameters_never_change_which_rows_standard_parameters_share() -> None:
    shadows = [("Observation", SearchParam("Security", "token", "Observation.meta.security")),
               ("Patient", SearchParam("a-name", "string", "Patient.name"))]
    try:
        for res_type, param in shadows:
            add_custom_param(res_type, param)
        assert stored_under("Observation", "_security") == ("_security",)
        assert stored_under("Patient", "name") == ("name",)
        assert stored_under("Patient", "phonetic") == ("phonetic", "name")
        values = extract_index_values({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                       "meta": {"security": [{"system": "s", "code": "c"}]}})
        assert values_of(values.tokens, "_security") and values_of(values.tokens, "Security")
    finally:
        for res_type, param in shadows:
            remove_custom_param(res_type, param.code)
