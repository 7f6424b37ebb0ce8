"""Domain validation beyond the base specification, applied to every write.

- TWSTRS QuestionnaireResponses are checked against their Questionnaire version (unknown linkId,
  wrong answer type, out-of-range answer → errors naming the linkId).
- MRgFUS Procedures must code their lesion targets from the fhirfus target CodeSystem.
- Treatment-parameter Observations must lie in the plausible ranges of
  ``fhirfus/ig/rules/plausibility.json`` (outside "hard": error; outside "soft": warning).
- A resource whose ``meta.profile`` claims a fhirfus profile must conform to it
  (``fhirfus.domain.profiles``); where a rule above already reports an element, the profile's
  issue on that element is left out, so one fault is reported once.

Errors make the write a 422; warnings are reported by ``$validate`` and never block.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from fhirfus.domain import profiles, twstrs
from fhirfus.errors import BusinessRuleViolation, Issue
from fhirfus.ig import code_displays, folder, load_json

PROCEDURE_SYSTEM = "https://fhirfus.org/fhir/CodeSystem/procedure"
TARGET_SYSTEM = "https://fhirfus.org/fhir/CodeSystem/mrgfus-target"


@cache
def plausibility() -> Mapping[str, Any]:
    return load_json(folder("rules") / "plausibility.json")


def _codings(concept: Any) -> list[dict]:
    return [c for c in (concept or {}).get("coding", []) if isinstance(c, dict)] if isinstance(concept, dict) else []


def _procedure_issues(procedure: Mapping[str, Any]) -> list[Issue]:
    if not any(c.get("system") == PROCEDURE_SYSTEM and c.get("code") == "mrgfus-ablation"
               for c in _codings(procedure.get("code"))):
        return []
    known = code_displays(TARGET_SYSTEM)
    issues = []
    for i, site in enumerate(procedure.get("bodySite") or []):
        for j, coding in enumerate(_codings(site)):
            if coding.get("system") == TARGET_SYSTEM and coding.get("code") not in known:
                issues.append(Issue(
                    f"'{coding.get('code')}' is not an MRgFUS target (known: {', '.join(sorted(known))})",
                    "code-invalid", "error", (f"Procedure.bodySite[{i}].coding[{j}].code",)))
    return issues


def _parameter_issues(observation: Mapping[str, Any]) -> list[Issue]:
    rules = plausibility()
    codes = [c.get("code") for c in _codings(observation.get("code")) if c.get("system") == rules["system"]]
    quantity = observation.get("valueQuantity")
    if not codes or not isinstance(quantity, dict) or not isinstance(quantity.get("value"), int | float):
        return []
    rule = rules["parameters"].get(codes[0])
    if rule is None:
        return []
    value = quantity["value"]
    (hard_low, hard_high), (soft_low, soft_high) = rule["hard"], rule["soft"]
    where = ("Observation.valueQuantity.value",)
    if not hard_low <= value <= hard_high:
        return [Issue(f"{codes[0]} = {value} {rule['unit']} is impossible (allowed {hard_low}–{hard_high})",
                      "business-rule", "error", where)]
    if not soft_low <= value <= soft_high:
        return [Issue(f"{codes[0]} = {value} {rule['unit']} is unusual (typical {soft_low}–{soft_high}); please check",
                      "business-rule", "warning", where)]
    return []


def _rule_issues(resource: Mapping[str, Any]) -> list[Issue]:
    kind = resource.get("resourceType")
    if kind == "QuestionnaireResponse" and twstrs.is_twstrs_response(resource):
        return twstrs.validate_response(resource)
    if kind == "Procedure":
        return _procedure_issues(resource)
    if kind == "Observation":
        return _parameter_issues(resource)
    return []


def domain_issues(resource: Mapping[str, Any], *, implied: bool = True) -> list[Issue]:
    """Errors and warnings of the fhirfus implementation guide for one (structurally valid) resource.

    ``implied=False``: without the profiles a resource meets unclaimed, which only warn (``enforce``)."""
    issues = _rule_issues(resource)
    reported = {e for i in issues if i.severity in ("error", "fatal") for e in i.expression}
    return issues + [i for i in profiles.profile_issues(resource, implied=implied)
                     if not reported.intersection(i.expression)]


def domain_errors(resource: Mapping[str, Any]) -> list[Issue]:
    """The errors of ``domain_issues``, found without the checks that can only warn."""
    return [i for i in domain_issues(resource, implied=False) if i.severity in ("error", "fatal")]


def enforce(resource: Mapping[str, Any]) -> None:
    """Raise 422 when the resource breaks a domain rule (warnings pass)."""
    errors = domain_errors(resource)
    if errors:
        raise BusinessRuleViolation(errors[0].diagnostics, issues=errors)
