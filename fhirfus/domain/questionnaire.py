"""Check a QuestionnaireResponse's answers against its Questionnaire, driven by the Questionnaire data.

Why generic: item types, answer ranges (``minValue``/``maxValue``), answer options and group membership
are read from the Questionnaire file, so a new version or a new scale needs a new file, not new code.

Item placement: real sites send items nested in their groups (as the Questionnaire is built) and also
flat, with every question at the top level. Both are accepted, and may be mixed; a question inside a
group it does not belong to is an issue. Answers are not required here: a partial response is valid
(retrospective data often is), and scoring decides what an incomplete part means.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from fhirfus.errors import Issue

MIN_VALUE = "http://hl7.org/fhir/StructureDefinition/minValue"
MAX_VALUE = "http://hl7.org/fhir/StructureDefinition/maxValue"
SCORE_WEIGHT = "https://fhirfus.org/fhir/StructureDefinition/score-weight"

Number = int | Decimal
AnswerValue = int | Decimal | tuple[str | None, str]  # integer, decimal, or (system, code) of a coding


@dataclass(frozen=True, slots=True)
class ItemDefinition:
    """What fhirfus needs to know about one Questionnaire item."""

    link_id: str
    type: str
    parent: str | None  # linkId of the enclosing group; None at the top level
    codes: tuple[tuple[str | None, str], ...]  # item.code as (system, code)
    minimum: Number | None
    maximum: Number | None
    weight: Decimal  # score-weight extension; 1 when absent
    read_only: bool
    repeats: bool
    options: frozenset[tuple[str | None, str]]  # answerOption codings as (system, code)


@dataclass(frozen=True, slots=True)
class QuestionnaireDefinition:
    """One version of a Questionnaire: its items by linkId, in document order."""

    url: str
    version: str
    items: Mapping[str, ItemDefinition]

    def children(self, group: str) -> tuple[ItemDefinition, ...]:
        return tuple(i for i in self.items.values() if i.parent == group)


@dataclass(frozen=True, slots=True)
class Answer:
    """A checked answer and where it was found (for issue expressions)."""

    link_id: str
    value: AnswerValue
    expression: str


def _extension_value(item: Mapping[str, Any], url: str) -> Any:
    for ext in item.get("extension", []):
        if ext.get("url") == url:
            return next((v for k, v in ext.items() if k.startswith("value")), None)
    return None


def _coding(coding: Mapping[str, Any]) -> tuple[str | None, str]:
    return coding.get("system"), coding.get("code", "")


def parse_questionnaire(resource: Mapping[str, Any]) -> QuestionnaireDefinition:
    """Index a Questionnaire resource (as loaded by ``fhirfus.ig``)."""
    items: dict[str, ItemDefinition] = {}

    def visit(entries: list[Mapping[str, Any]], parent: str | None) -> None:
        for entry in entries:
            weight = _extension_value(entry, SCORE_WEIGHT)
            items[entry["linkId"]] = ItemDefinition(
                link_id=entry["linkId"],
                type=entry["type"],
                parent=parent,
                codes=tuple(_coding(c) for c in entry.get("code", [])),
                minimum=_extension_value(entry, MIN_VALUE),
                maximum=_extension_value(entry, MAX_VALUE),
                weight=Decimal(1) if weight is None else Decimal(weight),
                read_only=bool(entry.get("readOnly", False)),
                repeats=bool(entry.get("repeats", False)),
                options=frozenset(
                    _coding(o["valueCoding"]) for o in entry.get("answerOption", []) if "valueCoding" in o
                ),
            )
            visit(entry.get("item", []), entry["linkId"])

    visit(resource.get("item", []), None)
    return QuestionnaireDefinition(url=resource["url"], version=str(resource.get("version", "")), items=items)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_integer(value) or isinstance(value, (float, Decimal))


def _value_problem(item: ItemDefinition, key: str, value: Any) -> str | None:
    """Why an answer value does not fit its item (None: it fits)."""
    link = f"'{item.link_id}'"
    if item.type == "integer":
        if key != "valueInteger" or not _is_integer(value):
            return f"{link} expects an integer answer (valueInteger), got {key}={value!r}"
    elif item.type == "decimal":
        if key not in ("valueDecimal", "valueInteger") or not _is_number(value):
            return f"{link} expects a number (valueDecimal), got {key}={value!r}"
    elif item.type == "choice":
        if key != "valueCoding" or not isinstance(value, Mapping):
            return f"{link} expects a coded answer (valueCoding), got {key}={value!r}"
        system, code = _coding(value)
        allowed = {c for _, c in item.options}
        if code not in allowed or (system is not None and (system, code) not in item.options):
            return f"{link} does not allow the answer {system}|{code}; allowed: {', '.join(sorted(allowed))}"
        return None
    else:
        return f"{link} has item type '{item.type}', which fhirfus does not check"
    if (item.minimum is not None and value < item.minimum) or (item.maximum is not None and value > item.maximum):
        return f"The answer {value} to {link} is outside its range {item.minimum}-{item.maximum}"
    return None


def _check_value(item: ItemDefinition, answer: Mapping[str, Any], where: str) -> tuple[AnswerValue | None, list[Issue]]:
    """The value of one answer, or the issue that makes it unusable."""
    key = next((k for k in answer if k.startswith("value")), None)
    if key is None:
        return None, [Issue(f"The answer to '{item.link_id}' has no value", "required", "error", (where,))]
    value = answer[key]
    problem = _value_problem(item, key, value)
    if problem is not None:
        return None, [Issue(problem, "value", "error", (f"{where}.{key}",))]
    return (_coding(value) if item.type == "choice" else value), []


def _question_issues(item: ItemDefinition, entry: Mapping[str, Any], here: str) -> Iterator[Answer | Issue]:
    link = f"'{item.link_id}'"
    if "item" in entry:
        yield Issue(f"{link} is a question and cannot contain items", "structure", "error", (f"{here}.item",))
    answers = entry.get("answer", [])
    if not isinstance(answers, list):
        yield Issue(f"The answers to {link} must be a list", "structure", "error", (f"{here}.answer",))
        return
    if len(answers) > 1 and not item.repeats:
        yield Issue(f"{link} takes one answer, got {len(answers)}", "value", "error", (f"{here}.answer",))
        return
    for index, answer in enumerate(answers):
        where = f"{here}.answer[{index}]"
        if not isinstance(answer, Mapping):
            yield Issue(f"An answer to {link} must be an object", "structure", "error", (where,))
            continue
        if "item" in answer:
            yield Issue(f"The answer to {link} cannot contain items", "structure", "error", (f"{where}.item",))
        value, issues = _check_value(item, answer, where)
        yield from issues
        if value is not None:
            yield Answer(item.link_id, value, where)


def _walk(
    definition: QuestionnaireDefinition, entries: Any, path: str, group: str | None, seen: set[str]
) -> Iterator[Answer | Issue]:
    if not isinstance(entries, list):
        yield Issue("item must be a list", "structure", "error", (f"{path}.item",))
        return
    for index, entry in enumerate(entries):
        here = f"{path}.item[{index}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("linkId"), str):
            yield Issue("Every item needs a linkId", "required", "error", (f"{here}.linkId",))
            continue
        link_id = entry["linkId"]
        item = definition.items.get(link_id)
        if item is None:
            yield Issue(
                f"Unknown linkId '{link_id}' for {definition.url}|{definition.version}",
                "structure",
                "error",
                (f"{here}.linkId",),
            )
            continue
        if group is not None and item.parent != group:
            yield Issue(f"'{link_id}' does not belong in group '{group}'", "structure", "error", (f"{here}.linkId",))
            continue
        if link_id in seen:
            yield Issue(f"'{link_id}' occurs more than once", "structure", "error", (f"{here}.linkId",))
            continue
        seen.add(link_id)
        if item.type == "group":
            if "answer" in entry:
                yield Issue(f"'{link_id}' is a group and takes no answers", "structure", "error", (f"{here}.answer",))
            yield from _walk(definition, entry.get("item", []), here, link_id, seen)
        else:
            yield from _question_issues(item, entry, here)


#: Outcomes of ``read_answers`` by (definition, JSON of the items): a write reads a response twice,
#: when its domain rules are checked and when its scores are derived after the references are
#: resolved, which leaves the items as they were. Answers and issues are immutable; the containers
#: are copied out.
_READ_KEPT = 512
_read: dict[tuple[int, bytes], tuple[QuestionnaireDefinition, dict[str, Answer], list[Issue]]] = {}


def read_answers(
    definition: QuestionnaireDefinition, response: Mapping[str, Any]
) -> tuple[dict[str, Answer], list[Issue]]:
    """The usable answers of ``response`` by linkId, and every issue found on the way."""
    try:
        key: tuple[int, bytes] | None = (id(definition), orjson.dumps(response.get("item", [])))
    except TypeError:  # e.g. an integer beyond 64 bits: read, not remembered
        key = None
    known = _read.get(key) if key is not None else None
    if known is not None and known[0] is definition:
        return dict(known[1]), list(known[2])
    answers, issues = _read_answers(definition, response)
    if key is not None:
        if len(_read) >= _READ_KEPT:
            _read.clear()
        _read[key] = (definition, dict(answers), list(issues))
    return answers, issues


def _read_answers(
    definition: QuestionnaireDefinition, response: Mapping[str, Any]
) -> tuple[dict[str, Answer], list[Issue]]:
    answers: dict[str, Answer] = {}
    issues: list[Issue] = []
    for found in _walk(definition, response.get("item", []), "QuestionnaireResponse", None, set()):
        if isinstance(found, Issue):
            issues.append(found)
        else:
            answers.setdefault(found.link_id, found)
    return answers, issues
