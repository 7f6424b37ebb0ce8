"""OperationOutcome builders."""

from __future__ import annotations

from collections.abc import Iterable

from fhirfus.errors import Issue


def operation_outcome(issues: Iterable[Issue]) -> dict:
    """An OperationOutcome resource for the given issues (at least one issue is always present)."""
    items = [i.to_fhir() for i in issues]
    if not items:
        items = [Issue("All OK", code="informational", severity="information").to_fhir()]
    return {"resourceType": "OperationOutcome", "issue": items}


def information(message: str) -> dict:
    return operation_outcome([Issue(message, code="informational", severity="information")])
