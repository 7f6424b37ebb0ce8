"""The R4 rules a structurally valid resource must still follow, gathered in one walk.

Why: the JSON representation, narrative, extension and Bundle rules each look at part of the
resource; ``fhirfus.fhir.validation.resource_issues`` calls this once, and one typed walk
(``fhirfus.fhir.walk``) feeds the families that need element types and makes the binding and
reference-target checks on the way. Issues carry their severity:
errors refuse a write, warnings are only reported by ``$validate``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhirfus.errors import Issue
from fhirfus.fhir import (
    bundle_references,
    bundle_rules,
    codings,
    conformance_rules,
    extensions,
    narrative,
    representation,
)
from fhirfus.fhir.bindings import BindingViolation
from fhirfus.fhir.walk import walk


def rule_issues(resource: Mapping[str, Any], resource_type: str) -> list[Issue]:
    """Issues of required bindings and reference targets (``fhirfus.fhir.bindings``, checked on
    the typed walk), then of every rule family, errors and warnings alike (a 400, never a crash,
    for JSON nested beyond what the recursive checks can follow)."""
    try:
        return _rule_issues(resource, resource_type)
    except RecursionError:
        return [Issue("The resource is nested too deeply to be checked", "too-costly", "error", (resource_type,))]


def _rule_issues(resource: Mapping[str, Any], resource_type: str) -> list[Issue]:
    shape = representation.shape_issues(resource, resource_type)
    violations: list[BindingViolation] = []
    nodes = walk(resource, representation.keep_primitive, violations)
    issues = [Issue(v.message, v.code, "error", (v.expression,)) for v in violations]
    issues += shape
    issues += representation.node_issues(nodes)
    issues += narrative.narrative_issues(nodes)
    issues += extensions.extension_issues(nodes)
    issues += codings.coding_issues(nodes)
    if resource_type == "Bundle":
        issues += bundle_rules.bundle_issues(resource)
        issues += bundle_references.bundle_reference_issues(resource)
    issues += conformance_rules.conformance_issues(resource, resource_type)
    return issues
