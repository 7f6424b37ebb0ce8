"""Values that describe the patient (sex, birth date) across the rows of one patient in a site file."""

from __future__ import annotations

import random

from fhirfus.domain.demo_cohort import SITES, patient_rows
from fhirfus.ingest.mapping.engine import map_rows
from fhirfus.ingest.mapping.spec import load_spec


def rows_of_one_patient() -> list[dict[str, str]]:
    rows = patient_rows(random.Random(11), SITES[0], 1)
    assert len(rows) >= 3
    return rows


def resource_of(result, key: str, res_type: str) -> dict:
    return next(e["resource"] for e in result.bundles[key]["entry"] if e["resource"]["resourceType"] == res_type)


def test_consistent_rows_map_to_one_patient_with_its_values() -> None:
    rows = rows_of_one_patient()
    result = map_rows(load_spec("site-registry"), rows, "A")
    assert result.errors == []
    patient = resource_of(result, rows[0]["site_patient_id"], "Patient")
    assert patient["birthDate"] == rows[0]["birth_date"]


def test_a_value_left_blank_on_the_first_row_comes_from_a_later_row() -> None:
    rows = rows_of_one_patient()
    subtype = rows[0]["cd_subtype"]
    assert subtype
    rows[0]["cd_subtype"] = ""  # optional column: a baseline row without the dystonia subtype
    result = map_rows(load_spec("site-registry"), rows, "A")
    assert result.errors == []
    condition = resource_of(result, rows[0]["site_patient_id"], "Condition")
    subtypes = [c["code"] for c in condition["code"]["coding"] if c["system"].endswith("/cd-subtype")]
    assert subtypes and len(subtypes) == len(subtype.split("+"))


def test_a_different_value_on_a_later_row_rejects_the_patient_naming_both_lines() -> None:
    rows = rows_of_one_patient()
    rows[2]["birth_date"] = "1901-01-01"
    result = map_rows(load_spec("site-registry"), rows, "A")
    key = rows[0]["site_patient_id"]
    assert key in result.rejected_patients and key not in result.bundles
    [error] = [e for e in result.errors if e.column == "birth_date"]
    assert error.line == 4  # header is line 1: rows[2] is line 4
    assert error.value == "1901-01-01" and "line 2" in error.reason
