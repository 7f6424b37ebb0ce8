"""TWSTRS: validate a QuestionnaireResponse, score it, and turn the scores into Observations.

Scoring rules are data, keyed by Questionnaire version: every Questionnaire file under
``fhirfus/ig/questionnaires`` with the TWSTRS canonical is one version. In a version, each group coded
from the twstrs CodeSystem (``severity``, ``disability``, ``pain``) is a subscale, and its score is the
sum of its integer answers times their ``score-weight`` (1 when absent): the duration factor weighs 2,
and pain severity ``(worst + best + 2 x usual) / 4`` is the weights 0.25 / 0.25 / 0.5. A subscale with
any unanswered item has no score (``None``, never zero); the total is the sum of the subscales and
exists only when all of them do. A revision (TWSTRS-2) is a new file with its own version and weights.

Numbers are ``Decimal`` so the fractional pain score is exact (it is a multiple of 0.25); the
Observations carry an int when the score is whole, else a float (exact for quarters).

``questionnaire`` may carry ``|version``; without one, 1994 is meant, so an unversioned response is
never rescored under a later revision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

from fhirfus.domain.questionnaire import Answer, QuestionnaireDefinition, parse_questionnaire, read_answers
from fhirfus.errors import BusinessRuleViolation, Issue
from fhirfus.ig import by_canonical, code_displays

TWSTRS_URL = "https://fhirfus.org/fhir/Questionnaire/twstrs"
TWSTRS_SYSTEM = "https://fhirfus.org/fhir/CodeSystem/twstrs"
DEFAULT_VERSION = "1994"
SUBSCALES = ("severity", "disability", "pain")
OBSERVATION_PROFILE = "https://fhirfus.org/fhir/StructureDefinition/twstrs-score-observation"
UCUM = "http://unitsofmeasure.org"
SURVEY = {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "survey", "display": "Survey"}


@dataclass(frozen=True, slots=True)
class Subscale:
    """One subscale: its code and the (linkId, weight) terms of its weighted sum."""

    code: str
    terms: tuple[tuple[str, Decimal], ...]


@dataclass(frozen=True, slots=True)
class ScoringRules:
    """A TWSTRS version: the Questionnaire (for answer checks) and the subscales read from it."""

    definition: QuestionnaireDefinition
    subscales: tuple[Subscale, ...]


@dataclass(frozen=True, slots=True)
class TwstrsScores:
    """Scores of one response; ``None`` where a part is incomplete."""

    version: str
    severity: Decimal | None
    disability: Decimal | None
    pain: Decimal | None
    total: Decimal | None

    def by_code(self) -> dict[str, Decimal | None]:
        """Scores keyed by their twstrs CodeSystem code, total first."""
        return {"total": self.total, "severity": self.severity, "disability": self.disability, "pain": self.pain}


def _rules(resource: Mapping[str, Any]) -> ScoringRules:
    definition = parse_questionnaire(resource)
    subscales = []
    for group in definition.items.values():
        code = next((c for s, c in group.codes if s == TWSTRS_SYSTEM), None)
        if group.type != "group" or code not in SUBSCALES:
            continue
        terms = tuple(
            (i.link_id, i.weight) for i in definition.children(group.link_id) if i.type == "integer" and not i.read_only
        )
        subscales.append(Subscale(code, terms))
    if sorted(s.code for s in subscales) != sorted(SUBSCALES):
        raise ValueError(f"TWSTRS Questionnaire version {definition.version!r} must define the groups {SUBSCALES}")
    return ScoringRules(definition, tuple(subscales))


@cache
def versions() -> dict[str, ScoringRules]:
    """Every TWSTRS version in ``fhirfus/ig/questionnaires``, read once."""
    return {version: _rules(q) for version, q in by_canonical("questionnaires", "Questionnaire", TWSTRS_URL).items()}


def is_twstrs_response(qr: Mapping[str, Any]) -> bool:
    """Whether the response claims the TWSTRS Questionnaire (any version), i.e. these rules apply."""
    canonical = qr.get("questionnaire")
    return isinstance(canonical, str) and canonical.partition("|")[0] == TWSTRS_URL


def _resolve(qr: Any) -> tuple[ScoringRules | None, list[Issue]]:
    if not isinstance(qr, Mapping) or qr.get("resourceType") != "QuestionnaireResponse":
        return None, [Issue("A TWSTRS response must be a QuestionnaireResponse", "invalid", "error", ("resourceType",))]
    where = ("QuestionnaireResponse.questionnaire",)
    canonical = qr.get("questionnaire")
    if not isinstance(canonical, str):
        return None, [Issue(f"questionnaire must be {TWSTRS_URL} (optionally |version)", "required", "error", where)]
    url, _, version = canonical.partition("|")
    if url != TWSTRS_URL:
        return None, [Issue(f"'{canonical}' is not the TWSTRS Questionnaire {TWSTRS_URL}", "value", "error", where)]
    version = version or DEFAULT_VERSION
    rules = versions().get(version)
    if rules is None:
        known = ", ".join(sorted(versions()))
        return None, [
            Issue(f"Unknown TWSTRS version '{version}'; known versions: {known}", "not-supported", "error", where)
        ]
    return rules, []


def _raise_if(issues: list[Issue]) -> None:
    if issues:
        raise BusinessRuleViolation(issues[0].diagnostics, issues=issues)


def validate_response(qr: Any) -> list[Issue]:
    """Every reason the response is not an acceptable TWSTRS assessment (empty: acceptable).

    Answer problems (unknown linkId, wrong answer type, out-of-range value, a non-coded direction,
    unknown version) and the header the score Observations need (subject, authored).
    """
    return _read(qr)[2]


def _read(qr: Any) -> tuple[ScoringRules | None, dict[str, Answer], list[Issue]]:
    """Rules, usable answers and every issue of a response, from one walk over the answers
    (``score_observations`` needs both, and used to walk them twice)."""
    rules, issues = _resolve(qr)
    if rules is None:
        return None, {}, issues
    answers, issues = read_answers(rules.definition, qr)
    for element in ("subject", "authored"):
        if not qr.get(element):
            issues.append(
                Issue(
                    f"A TWSTRS response needs {element} for its score Observations",
                    "required",
                    "error",
                    (f"QuestionnaireResponse.{element}",),
                )
            )
    return rules, answers, issues


def _weighted_sum(subscale: Subscale, values: Mapping[str, Any]) -> Decimal | None:
    """The subscale score, or None when any of its items is unanswered (never a silent zero)."""
    if any(link_id not in values for link_id, _ in subscale.terms):
        return None
    return sum((weight * values[link_id] for link_id, weight in subscale.terms), Decimal(0))


def score_response(qr: Mapping[str, Any]) -> TwstrsScores:
    """Score a TWSTRS response; raises ``BusinessRuleViolation`` (422) when its answers are invalid."""
    rules, issues = _resolve(qr)
    if rules is None:
        raise BusinessRuleViolation(issues[0].diagnostics, issues=issues)
    answers, issues = read_answers(rules.definition, qr)
    _raise_if(issues)
    return _scores(rules, answers)


def _scores(rules: ScoringRules, answers: Mapping[str, Answer]) -> TwstrsScores:
    values = {link_id: answer.value for link_id, answer in answers.items()}
    scores = {s.code: _weighted_sum(s, values) for s in rules.subscales}
    parts = [score for score in scores.values() if score is not None]
    total = sum(parts, Decimal(0)) if len(parts) == len(SUBSCALES) else None
    return TwstrsScores(rules.definition.version, scores["severity"], scores["disability"], scores["pain"], total)


def _json_number(value: Decimal) -> int | float:
    """JSON-ready number: int when whole, else float (scores are multiples of 0.25, exact in binary)."""
    return int(value) if value == value.to_integral_value() else float(value)


def _json_copy(value: Any) -> Any:
    """A deep copy of a JSON value: objects and arrays copied, the immutable scalars shared (what
    ``copy.deepcopy`` does for JSON, without its memo and dispatch; each response's scores copy it)."""
    if isinstance(value, dict):
        return {key: _json_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_copy(item) for item in value]
    return value


def _observation(code: str, value: Decimal, qr: Mapping[str, Any], response_ref: str) -> dict:
    return {
        "resourceType": "Observation",
        "meta": {"profile": [OBSERVATION_PROFILE]},
        "status": "final",
        "category": [{"coding": [dict(SURVEY)]}],
        "code": {"coding": [{"system": TWSTRS_SYSTEM, "code": code, "display": code_displays(TWSTRS_SYSTEM)[code]}]},
        "subject": _json_copy(qr["subject"]),
        "effectiveDateTime": qr["authored"],
        "valueQuantity": {"value": _json_number(value), "unit": "{score}", "system": UCUM, "code": "{score}"},
        "derivedFrom": [{"reference": response_ref}],
    }


def score_observations(qr: Mapping[str, Any], response_ref: str) -> list[dict]:
    """The score Observations of the fhirfus contract, one per score that exists (total first).

    ``response_ref`` is the reference to the stored response (e.g. ``QuestionnaireResponse/123``, or a
    ``urn:uuid:`` inside a transaction) used in ``derivedFrom``. Raises ``BusinessRuleViolation`` when
    ``validate_response`` finds issues.
    """
    rules, answers, issues = _read(qr)
    _raise_if(issues)
    assert rules is not None  # no rules always comes with an issue
    scores = _scores(rules, answers).by_code()
    return [_observation(code, value, qr, response_ref) for code, value in scores.items() if value is not None]
