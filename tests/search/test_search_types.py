"""Search parameter types over HTTP, on SQLite and PostgreSQL: string, token, date, number,
quantity, reference and uri, with their modifiers and prefixes.

Every expected answer is computed from the generated data set (``tests/search_data.py``) with a
small reference implementation of the R4 rules, and compared as a set of ids.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from search_data import (
    ACME,
    DATES,
    LOINC,
    MRN,
    NID,
    NUMBERS,
    QUANTITIES,
    REFERENCES,
    RUN,
    RUN_TAG,
    STRINGS,
    TOKENS,
    UCUM,
    URIS,
    VS_BASE,
    Dataset,
    compare_dates,
    compare_numbers,
    date_range,
    ids,
    load,
    overlaps,
    quantity_matches,
    relative,
    search,
    string_matches,
    token_matches,
)


@pytest.fixture
def data(server) -> Dataset:
    return load(server)


def found(client: httpx.Client, res_type: str, params: dict | list[tuple[str, str]]) -> set[str]:
    """Ids of the matches of a search restricted to this run's data (all pages, no duplicates)."""
    pairs = list(params.items()) if isinstance(params, dict) else list(params)
    result = search(client, f"/{res_type}", [*pairs, ("_tag", RUN_TAG), ("_count", "100")])
    matched = result.ids()
    assert len(matched) == len(set(matched)), "duplicate entries"
    assert all(e["resource"]["resourceType"] == res_type for e in result.entries)
    assert result.total == len(matched)
    return set(matched)


def meaningful(expected: set[str], universe: list[dict]) -> set[str]:
    """The expected set, checked to be neither empty nor everything (so the case tests something)."""
    assert 0 < len(expected) < len(universe), f"degenerate case: {len(expected)} of {len(universe)}"
    return expected


# --------------------------------------------------------------------------- string

STRING_DEFAULT = [
    ("Patient", "family", "mull"),
    ("Patient", "family", "MÜL"),
    ("Patient", "family", "garcia"),
    ("Patient", "family", "Gárc"),
    ("Patient", "family", "du"),
    ("Patient", "family", "o'b"),
    ("Patient", "given", "zoe"),
    ("Patient", "given", "ANAÏS"),
    ("Patient", "given", "ana"),
    ("Patient", "given", "Emile"),
    ("Patient", "name", "jo"),
    ("Patient", "name", "nguyen"),
    ("Patient", "name", "angstrom"),
    ("Patient", "address-city", "zur"),
    ("Patient", "address-city", "Geneve"),
    ("Patient", "address-city", "sao p"),
    ("Patient", "address", "1 RUE du"),
    ("Patient", "address", "8012"),
    ("Organization", "name", "hopital"),
    ("Organization", "name", "kn"),
    ("Observation", "value-string", "normal"),
    ("Observation", "value-string", "eleve"),
]


@pytest.mark.parametrize(("res_type", "param", "value"), STRING_DEFAULT, ids=[f"{t}-{p}-{v}" for t, p, v in STRING_DEFAULT])
def test_string_default_matches_prefix_ignoring_case_and_accents(
    client: httpx.Client, data: Dataset, res_type: str, param: str, value: str
) -> None:
    expected = ids(data.of(res_type), lambda r: string_matches(STRINGS[(res_type, param)](r), value, None))
    assert found(client, res_type, {param: value}) == meaningful(expected, data.of(res_type))


def test_string_default_matches_the_whole_human_name(client: httpx.Client, data: Dataset) -> None:
    patient = next(p for p in data.of("Patient") if "name" in p and len(p["name"][0]["given"]) == 1 and "prefix" not in p["name"][0])
    whole = f"{patient['name'][0]['given'][0]} {patient['name'][0]['family'][:2]}".upper()
    expected = ids(data.of("Patient"), lambda r: string_matches(STRINGS[("Patient", "name")](r), whole, None))
    assert patient["id"] in expected
    assert found(client, "Patient", {"name": whole}) == expected


STRING_EXACT = [("Patient", "family", "Müller"), ("Patient", "family", "MULLER"), ("Patient", "family", "Muller"),
                ("Patient", "given", "Zoë"), ("Patient", "family", "Mül"), ("Organization", "name", "Klinikum Nord")]


@pytest.mark.parametrize(("res_type", "param", "value"), STRING_EXACT, ids=[f"{t}-{p}-{v}" for t, p, v in STRING_EXACT])
def test_string_exact_matches_the_whole_value_with_case_and_accents(
    client: httpx.Client, data: Dataset, res_type: str, param: str, value: str
) -> None:
    expected = ids(data.of(res_type), lambda r: string_matches(STRINGS[(res_type, param)](r), value, "exact"))
    assert found(client, res_type, {f"{param}:exact": value}) == expected


STRING_CONTAINS = [("Patient", "family", "ll"), ("Patient", "family", "ARC"), ("Patient", "given", "oe"),
                   ("Patient", "family", "pon"), ("Patient", "address-city", "ev"), ("Organization", "name", "sjuk")]


@pytest.mark.parametrize(("res_type", "param", "value"), STRING_CONTAINS, ids=[f"{t}-{p}-{v}" for t, p, v in STRING_CONTAINS])
def test_string_contains_matches_anywhere_ignoring_case_and_accents(
    client: httpx.Client, data: Dataset, res_type: str, param: str, value: str
) -> None:
    expected = ids(data.of(res_type), lambda r: string_matches(STRINGS[(res_type, param)](r), value, "contains"))
    assert found(client, res_type, {f"{param}:contains": value}) == meaningful(expected, data.of(res_type))


def test_string_values_are_or_ed_and_repeated_parameters_and_ed(client: httpx.Client, data: Dataset) -> None:
    names = STRINGS[("Patient", "name")]
    either = ids(data.of("Patient"), lambda r: string_matches(names(r), "mull", None) or string_matches(names(r), "smith", None))
    both = ids(data.of("Patient"), lambda r: string_matches(names(r), "mull", None) and string_matches(names(r), "zo", None))
    assert found(client, "Patient", {"name": "mull,smith"}) == meaningful(either, data.of("Patient"))
    assert found(client, "Patient", [("name", "mull"), ("name", "zo")]) == both


def test_string_with_escaped_comma_is_one_value(client: httpx.Client, data: Dataset) -> None:
    assert found(client, "Patient", {"family": r"muller\,smith"}) == set()


@pytest.mark.parametrize("missing", ["true", "false"])
def test_string_missing(client: httpx.Client, data: Dataset, missing: str) -> None:
    expected = ids(data.of("Patient"), lambda r: (not STRINGS[("Patient", "family")](r)) == (missing == "true"))
    assert found(client, "Patient", {"family:missing": missing}) == meaningful(expected, data.of("Patient"))


# --------------------------------------------------------------------------- token


def _some_identifier(data: Dataset, system: str | None) -> str:
    """An identifier value of the data set under ``system`` that also occurs without a system."""
    values: dict[str, set[str | None]] = {}
    for patient in data.of("Patient"):
        for identifier in patient["identifier"]:
            values.setdefault(identifier["value"], set()).add(identifier.get("system"))
    return next(v for v, systems in sorted(values.items()) if {system, None} <= systems and len(systems) > 1)


IDENTIFIER_FORMS = [
    pytest.param(form, system, id=f"{label}-{form}")
    for system, label in ((MRN, "mrn"), (NID, "nid"), (None, "no-system"))
    for form in ("system|code", "code", "|code", "system|")
    if not (system is None and form == "system|")  # '|' alone is no token
]


@pytest.mark.parametrize(("form", "system"), IDENTIFIER_FORMS)
def test_token_identifier_forms(client: httpx.Client, data: Dataset, form: str, system: str | None) -> None:
    code = _some_identifier(data, system)
    value = form.replace("system", system or "").replace("code", code)
    expected = ids(data.of("Patient"), lambda r: token_matches(TOKENS[("Patient", "identifier")](r), value, None))
    assert expected
    assert found(client, "Patient", {"identifier": value}) == expected


CODE_TOKENS = [f"{LOINC}|8867-4", "8867-4", f"{ACME}|8867-4", "|WT", "WT", f"{ACME}|WT", f"{ACME}|", f"{LOINC}|",
               f"{LOINC}|8867-4,{ACME}|WT", "8480-6,8310-5"]


@pytest.mark.parametrize("value", CODE_TOKENS)
def test_token_code_forms(client: httpx.Client, data: Dataset, value: str) -> None:
    tokens = TOKENS[("Observation", "code")]
    expected = ids(data.of("Observation"), lambda r: any(token_matches(tokens(r), v, None) for v in value.split(",")))
    assert found(client, "Observation", {"code": value}) == meaningful(expected, data.of("Observation"))


@pytest.mark.parametrize(("param", "value"), [("gender", "male"), ("gender", "female,other"), ("active", "true"),
                                              ("code", f"{LOINC}|8867-4"), ("status", "final")])
def test_token_not_matches_resources_without_that_code_including_missing(
    client: httpx.Client, data: Dataset, param: str, value: str
) -> None:
    res_type = "Observation" if param in ("code", "status") else "Patient"
    tokens = TOKENS[(res_type, param)]
    expected = ids(data.of(res_type), lambda r: all(token_matches(tokens(r), v, "not") for v in value.split(",")))
    assert found(client, res_type, {f"{param}:not": value}) == meaningful(expected, data.of(res_type))


@pytest.mark.parametrize(("res_type", "param", "value"), [
    ("Observation", "code", "heart"), ("Observation", "code", "BODY WEIGHT"), ("Observation", "code", "poids"),
    ("Observation", "code", "temperature"), ("Observation", "code", "pulse"),
    ("Patient", "identifier", "national"),
])
def test_token_text_matches_display_and_text_ignoring_case_and_accents(
    client: httpx.Client, data: Dataset, res_type: str, param: str, value: str
) -> None:
    tokens = TOKENS[(res_type, param)]
    expected = ids(data.of(res_type), lambda r: token_matches(tokens(r), value, "text"))
    assert found(client, res_type, {f"{param}:text": value}) == meaningful(expected, data.of(res_type))


@pytest.mark.parametrize(("param", "missing"), [("gender", "true"), ("gender", "false"), ("active", "true")])
def test_token_missing(client: httpx.Client, data: Dataset, param: str, missing: str) -> None:
    expected = ids(data.of("Patient"), lambda r: (not TOKENS[("Patient", param)](r)) == (missing == "true"))
    assert found(client, "Patient", {f"{param}:missing": missing}) == meaningful(expected, data.of("Patient"))


@pytest.mark.parametrize("param", ["phone", "email"])
def test_token_contact_point_matches_its_value(client: httpx.Client, data: Dataset, param: str) -> None:
    patient = data.of("Patient")[7]
    value = next(t["value"] for t in patient["telecom"] if t["system"] == param)
    assert found(client, "Patient", {param: value}) == {patient["id"]}


def test_token_class_coding(client: httpx.Client, data: Dataset) -> None:
    value = "http://terminology.hl7.org/CodeSystem/v3-ActCode|AMB"
    expected = ids(data.of("Encounter"), lambda r: token_matches(TOKENS[("Encounter", "class")](r), value, None))
    assert found(client, "Encounter", {"class": value}) == meaningful(expected, data.of("Encounter"))


# --------------------------------------------------------------------------- date

DATE_VALUES = ["1970", "1970-03", "1970-03-04", "2000", "2021", "2021-03", "2021-03-04", "2021-03-04T10:30:00Z",
               "2021-03-04T12:30:00+02:00", "2021-03-04T10:30", "2021-03-04T10:30:00.123Z"]
PREFIXES = ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"]


def _date_cases() -> list:
    cases = []
    for prefix in PREFIXES:
        for value in DATE_VALUES:
            target = ("Patient", "birthdate") if value < "2001" else ("Observation", "date")
            cases.append(pytest.param(*target, prefix, value, id=f"{target[1]}-{prefix}{value}"))
        cases.append(pytest.param("Encounter", "date", prefix, "2021-03", id=f"encounter-open-period-{prefix}2021-03"))
    return cases


def _search_range(value: str) -> tuple[datetime, datetime]:
    """Search values without a zone are UTC, as stored ones; ``T10:30`` is a minute."""
    return date_range(value + ("Z" if "T" in value and value[-1].isdigit() and value.count(":") == 1 else ""))


@pytest.mark.parametrize(("res_type", "param", "prefix", "value"), _date_cases())
def test_date_prefix_compares_ranges(client: httpx.Client, data: Dataset, res_type: str, param: str, prefix: str, value: str) -> None:
    query = _search_range(value)
    expected = ids(data.of(res_type), lambda r: any(compare_dates(prefix, v, query) for v in DATES[(res_type, param)](r)))
    assert found(client, res_type, {param: f"{prefix}{value}"}) == expected


def test_date_eq_with_partial_year_means_the_whole_year(client: httpx.Client, data: Dataset) -> None:
    expected = ids(data.of("Patient"), lambda r: r.get("birthDate", "").startswith("1970"))
    assert {len(p["birthDate"]) for p in data.of("Patient") if p["id"] in expected} == {4, 7, 10}
    assert found(client, "Patient", {"birthdate": "1970"}) == expected


def test_date_without_prefix_is_eq(client: httpx.Client, data: Dataset) -> None:
    assert found(client, "Observation", {"date": "2021-03"}) == found(client, "Observation", {"date": "eq2021-03"})


def test_date_ge_with_partial_year(client: httpx.Client, data: Dataset) -> None:
    expected = ids(data.of("Patient"), lambda r: "birthDate" in r and r["birthDate"][:4] >= "1970")
    assert found(client, "Patient", {"birthdate": "ge1970"}) == meaningful(expected, data.of("Patient"))


def test_date_range_with_two_prefixes_is_an_intersection(client: httpx.Client, data: Dataset) -> None:
    low, high = _search_range("2021-03-01"), _search_range("2021-03-31")
    expected = ids(data.of("Observation"), lambda r: any(compare_dates("ge", v, low) and compare_dates("le", v, high) for v in DATES[("Observation", "date")](r)))
    got = found(client, "Observation", [("date", "ge2021-03-01"), ("date", "le2021-03-31")])
    assert got == meaningful(expected, data.of("Observation"))


@pytest.mark.parametrize("value", ["2021-03-04", "2021-03", "1970-03-04"])
def test_date_ap_includes_the_range_and_its_surroundings(client: httpx.Client, data: Dataset, value: str) -> None:
    """``ap`` is approximate by definition: fhirfus widens by 10 % of the distance from now (at least a day).

    The answer must contain everything overlapping the range widened by a day, and nothing beyond
    the range widened by a little more than that 10 %.
    """
    res_type, param = ("Patient", "birthdate") if value < "2000" else ("Observation", "date")
    low, high = _search_range(value)
    margin = max(abs(datetime.now(UTC) - low) / 10, timedelta(days=1))
    values = DATES[(res_type, param)]
    must = ids(data.of(res_type), lambda r: any(overlaps(v, low - timedelta(days=1), high + timedelta(days=1)) for v in values(r)))
    may = ids(data.of(res_type), lambda r: any(overlaps(v, low - margin * 1.1, high + margin * 1.1) for v in values(r)))
    got = found(client, res_type, {param: f"ap{value}"})
    assert must <= got <= may
    assert must


@pytest.mark.parametrize("missing", ["true", "false"])
def test_date_missing(client: httpx.Client, data: Dataset, missing: str) -> None:
    expected = ids(data.of("Observation"), lambda r: (not DATES[("Observation", "date")](r)) == (missing == "true"))
    assert found(client, "Observation", {"date:missing": missing}) == meaningful(expected, data.of("Observation"))


# --------------------------------------------------------------------------- number

NUMBER_VALUES = ["10", "10.0", "10.5", "9.5", "1e1", "100", "50.00"]


@pytest.mark.parametrize("prefix", ["", *PREFIXES, "ap"])
@pytest.mark.parametrize("value", NUMBER_VALUES)
def test_number_prefix(client: httpx.Client, data: Dataset, prefix: str, value: str) -> None:
    """``eq``/``ne`` use the implicit precision of the value (``10`` is [9.5, 10.5)), the others the value."""
    numbers = NUMBERS[("RiskAssessment", "probability")]
    expected = ids(data.of("RiskAssessment"), lambda r: any(compare_numbers(prefix or "eq", n, value) for n in numbers(r)))
    assert found(client, "RiskAssessment", {"probability": f"{prefix}{value}"}) == expected


def test_number_eq_uses_implicit_precision(client: httpx.Client, data: Dataset) -> None:
    numbers = NUMBERS[("RiskAssessment", "probability")]
    coarse = ids(data.of("RiskAssessment"), lambda r: any(Decimal("9.5") <= n < Decimal("10.5") for n in numbers(r)))
    fine = ids(data.of("RiskAssessment"), lambda r: any(Decimal("9.995") <= n < Decimal("10.005") for n in numbers(r)))
    assert fine < coarse
    assert found(client, "RiskAssessment", {"probability": "10"}) == coarse
    assert found(client, "RiskAssessment", {"probability": "10.00"}) == fine


# --------------------------------------------------------------------------- quantity

QUANTITY_CASES = ["100", "100.0", "eq100", "ne100", "gt100", "lt100", "ge100.5", "le99.5", "sa100", "eb100", "ap100",
                  "72.5", f"100|{UCUM}|kg", f"gt50|{UCUM}|/min", "100||kg", "ge0||[lb_av]", "37.5|http://other.org|Cel",
                  f"le100|{UCUM}|"]


@pytest.mark.parametrize("value", QUANTITY_CASES)
def test_quantity_prefix_system_and_code(client: httpx.Client, data: Dataset, value: str) -> None:
    quantities = QUANTITIES[("Observation", "value-quantity")]
    expected = ids(data.of("Observation"), lambda r: quantity_matches(quantities(r), value))
    assert found(client, "Observation", {"value-quantity": value}) == expected


def test_quantity_code_without_system_also_matches_the_unit(client: httpx.Client, data: Dataset) -> None:
    """``5.4||mg`` matches Quantity.code or, as the R4 spec's example says, the human unit."""
    quantities = QUANTITIES[("Observation", "value-quantity")]
    unit_only = ids(data.of("Observation"), lambda r: any(system is None and value > 0 for value, system, _, _ in quantities(r)))
    assert unit_only
    assert unit_only <= found(client, "Observation", {"value-quantity": "gt0||kg"})


@pytest.mark.parametrize("missing", ["true", "false"])
def test_quantity_missing(client: httpx.Client, data: Dataset, missing: str) -> None:
    expected = ids(data.of("Observation"), lambda r: ("valueQuantity" not in r) == (missing == "true"))
    assert found(client, "Observation", {"value-quantity:missing": missing}) == meaningful(expected, data.of("Observation"))


# --------------------------------------------------------------------------- reference


def _patient_with_observations(data: Dataset, absolute: bool) -> str:
    """A patient some Observation references (with an absolute URL if ``absolute``)."""
    for obs in data.of("Observation"):
        reference = obs.get("subject", {}).get("reference", "")
        if reference.startswith("http") == absolute and reference:
            return relative(reference)
    raise AssertionError("no such observation")


def _referring(data: Dataset, res_type: str, param: str, target: str) -> set[str]:
    return ids(data.of(res_type), lambda r: target in [relative(x) for x in REFERENCES[(res_type, param)](r)])


@pytest.mark.parametrize("absolute", [False, True], ids=["stored-relative", "stored-absolute"])
@pytest.mark.parametrize("form", ["Type/id", "id", "absolute", "modifier"])
def test_reference_forms(client: httpx.Client, data: Dataset, absolute: bool, form: str) -> None:
    target = _patient_with_observations(data, absolute)
    value = {"Type/id": target, "id": target.split("/")[1], "absolute": f"{data.base}/{target}", "modifier": target.split("/")[1]}[form]
    param = "subject:Patient" if form == "modifier" else "subject"
    assert found(client, "Observation", {param: value}) == _referring(data, "Observation", "subject", target)


def test_reference_type_modifier_excludes_other_types(client: httpx.Client, data: Dataset) -> None:
    target = _patient_with_observations(data, False)
    assert found(client, "Observation", {"subject:Group": target.split("/")[1]}) == set()


@pytest.mark.parametrize(("res_type", "param"), [("Observation", "patient"), ("Observation", "encounter"),
                                                 ("Observation", "performer"), ("Patient", "organization"),
                                                 ("Encounter", "service-provider"), ("Organization", "partof")])
def test_reference_each_parameter(client: httpx.Client, data: Dataset, res_type: str, param: str) -> None:
    targets = sorted({relative(x) for r in data.of(res_type) for x in REFERENCES[(res_type, param)](r)})
    target = targets[len(targets) // 2]
    expected = _referring(data, res_type, param, target)
    assert found(client, res_type, {param: target}) == meaningful(expected, data.of(res_type))


def test_reference_several_values_are_or_ed(client: httpx.Client, data: Dataset) -> None:
    targets = [f"Organization/{RUN}-org-1", f"Organization/{RUN}-org-4"]
    expected = _referring(data, "Patient", "organization", targets[0]) | _referring(data, "Patient", "organization", targets[1])
    assert found(client, "Patient", {"organization": ",".join(targets)}) == expected


@pytest.mark.parametrize("missing", ["true", "false"])
def test_reference_missing(client: httpx.Client, data: Dataset, missing: str) -> None:
    expected = ids(data.of("Patient"), lambda r: ("managingOrganization" not in r) == (missing == "true"))
    assert found(client, "Patient", {"organization:missing": missing}) == meaningful(expected, data.of("Patient"))


# --------------------------------------------------------------------------- uri


@pytest.mark.parametrize(("modifier", "value"), [
    (None, f"{VS_BASE}/a"), (None, f"{VS_BASE}/a/"), ("below", f"{VS_BASE}/a"), ("below", f"{VS_BASE}/a/sub"),
    ("below", f"http://example.org/{RUN}/"), ("above", f"{VS_BASE}/a/sub/deeper/still"), ("above", f"{VS_BASE}/b/x"),
    ("above", f"{VS_BASE}/abc"),
])
def test_uri_exact_below_and_above(client: httpx.Client, data: Dataset, modifier: str | None, value: str) -> None:
    """``:below`` and ``:above`` compare string prefixes, as HAPI FHIR does."""
    def matches(url: str) -> bool:
        return {"below": url.startswith(value), "above": value.startswith(url), None: url == value}[modifier]

    expected = ids(data.of("ValueSet"), lambda r: any(matches(u) for u in URIS[("ValueSet", "url")](r)))
    param = f"url:{modifier}" if modifier else "url"
    assert found(client, "ValueSet", {param: value}) == expected
