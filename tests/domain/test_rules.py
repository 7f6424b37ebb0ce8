"""``rules.domain_errors`` (what a write enforces) finds exactly the errors of ``rules.domain_issues``
(what ``$validate`` reports), though it skips the profiles a resource meets unclaimed: a family of
vital signs, conformant and broken, claimed and not, plus the official R4 Observation examples."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhirfus.domain import rules
from fhirfus.errors import BusinessRuleViolation
from tests.fhir.test_core_profiles import BLOOD_PRESSURE, HEART_RATE

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
EXAMPLES = sorted((SHARED / "fhir-r4-examples").glob("*/*.json"))


def _mutations(resource: dict) -> Iterator[dict]:
    """The resource, then one variant per break a vital signs profile (or its invariants) reports."""
    yield resource
    for key in ("subject", "category", "effectiveDateTime", "valueQuantity", "component", "status"):
        if key in resource:
            yield {k: v for k, v in resource.items() if k != key}
    if "effectiveDateTime" in resource:
        yield {**resource, "effectiveDateTime": "2024"}  # vs-1: precise to the day
    if "valueQuantity" in resource:
        yield {**resource, "valueQuantity": {**resource["valueQuantity"], "code": "Hz"}}
        yield {**resource, "valueQuantity": {**resource["valueQuantity"], "system": "http://example.org"}}
    for component in resource.get("component", [])[:1]:
        yield {**resource, "component": [{**component, "code": {"text": "no coding"}}]}


def _family() -> list[dict]:
    seeds = [BLOOD_PRESSURE, HEART_RATE]
    for path in EXAMPLES:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and data.get("resourceType") == "Observation":
            seeds.append(data)
    family = []
    for seed in seeds:
        claimed = copy.deepcopy(seed)
        unclaimed = {k: v for k, v in copy.deepcopy(seed).items() if k != "meta"}
        for variant in (claimed, unclaimed):
            family += list(_mutations(variant))
    return family


FAMILY = _family()


def _errors(resource: dict) -> list:
    return [i for i in rules.domain_issues(resource) if i.severity in ("error", "fatal")]


def test_the_family_has_implied_warnings_and_claimed_errors() -> None:
    """The comparison below can fail: the family holds both kinds of issue that could differ."""
    warned = [r for r in FAMILY if any(i.severity == "warning" for i in rules.domain_issues(r))]
    refused = [r for r in FAMILY if _errors(r)]
    assert len(warned) >= 10 and len(refused) >= 10


@pytest.mark.parametrize("index", range(len(FAMILY)))
def test_domain_errors_are_the_errors_of_domain_issues(index: int) -> None:
    resource = FAMILY[index]
    assert rules.domain_errors(resource) == _errors(resource)


def test_enforce_refuses_a_broken_claimed_profile_and_passes_a_broken_implied_one() -> None:
    broken = {**HEART_RATE, "valueQuantity": {**HEART_RATE["valueQuantity"], "code": "Hz"}}
    with pytest.raises(BusinessRuleViolation):
        rules.enforce(broken)
    rules.enforce({k: v for k, v in broken.items() if k != "meta"})  # only a warning: stored
