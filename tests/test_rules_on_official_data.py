"""The official R4 examples and the Synthea data break none of the R4 rule families
(``fhirfus.fhir.checks``): a rule that refuses them would refuse what real systems send."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fhirfus.fhir.checks import rule_issues
from fhirfus.fhir.validation import served_types

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
EXAMPLES = sorted((SHARED / "fhir-r4-examples").glob("*/*.json"))
SYNTHEA = sorted((SHARED / "synthea-r4-transaction-bundles").glob("*.json"))
BULK = sorted((SHARED / "synthea-bulk-10-patients").glob("*.000.ndjson"))


def errors(resource: dict) -> list[str]:
    return [f"{i.expression}: {i.diagnostics}" for i in rule_issues(resource, resource["resourceType"])
            if i.severity in ("error", "fatal")]


@pytest.mark.skipif(not EXAMPLES, reason=f"official examples absent under {SHARED}")
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_official_example_breaks_no_rule(path: Path) -> None:
    resource = json.loads(path.read_text(encoding="utf-8"))
    if resource.get("resourceType") not in served_types():
        pytest.skip(f"{resource.get('resourceType')} is not served")
    assert errors(resource) == []


@pytest.mark.skipif(not SYNTHEA, reason=f"Synthea bundles absent under {SHARED}")
def test_synthea_transaction_bundles_break_no_rule() -> None:
    found = []
    for path in SYNTHEA:
        bundle = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(bundle, dict) and bundle.get("resourceType") == "Bundle":
            found += [f"{path.name}: {e}" for e in errors(bundle)]
    assert found == []


@pytest.mark.skipif(not BULK, reason=f"Synthea NDJSON absent under {SHARED}")
def test_synthea_bulk_resources_break_no_rule() -> None:
    found = []
    for path in BULK:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                found += [f"{path.name}: {e}" for e in errors(json.loads(line))][:5]
    assert found == []
