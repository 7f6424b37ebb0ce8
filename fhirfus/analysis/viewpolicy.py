"""A ViewDefinition run through a de-identification policy (``$viewdefinition-run`` and
``$viewdefinition-export``: an analyst's always, with ``policy`` (default ``safe-harbor``); anybody
else's that names a ``policy``).

A policy gives its rules per view and column (``columns: {view name: {column: rule}}``), as for
the analysis export. Those rules belong to the guide's views as published: a view gets them when
it is one of the guide's (``viewReference``), or an inline copy identical to one; any other view
has no rules, so every column is refused (fail closed). Whatever the rule, a column or ``where``
whose FHIRPath mentions a ``never_read`` element (``name``, ``identifier``, ``telecom``, …), or
walks elements it does not name (``descendants()``, ``children()``, …), is refused.

Everything the analysis export promises holds per row: patient keys become the pseudonyms of the
same crosswalk and namespace (so a view and an analysis export agree), other resource keys opaque
numbers, dates day offsets from the patient's day zero — computed as the analysis export does, over
every site's data — and birth dates age bands. A date column needs the view's patient column (rule
``pseudonym``) to find that day zero; without one the view is refused, and a patient without a
day zero gets no offset. Rows without a patient are left out, as the analysis export leaves them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from itertools import islice
from typing import Any

import orjson

from fhirfus.analysis.deid.policy import (
    TEMPORAL,
    TEXT,
    Policy,
    PolicyError,
    Rule,
    ViewColumn,
    checked_key,
    load_policy,
    namespace_for,
    path_elements,
    pseudonyms,
)
from fhirfus.analysis.deid.rows import column_function, reference_days
from fhirfus.analysis.source import Cohort, read_cohort
from fhirfus.analysis.views import analysis_views, view_from
from fhirfus.ig import folder
from fhirfus.interactions.viewdefinition import ViewRun
from fhirfus.sqlonfhir.runner import ViewDefinitionError
from fhirfus.store.repository import Store

#: FHIRPath functions that reach elements without naming them: the never-read check could not see what they read.
UNNAMED_READS = frozenset({"descendants", "children", "repeat", "resolve", "trace", "aggregate"})
PAGE = 1000  # rows pseudonymised at once (one crosswalk round trip)
_DATED = ("day-offset", "age-band")


@dataclass(frozen=True)
class _Step:
    column: ViewColumn
    rule: Rule


class ViewDeidentification:
    """The policy's rules for one view's columns, checked; ``apply`` shapes its rows."""

    def __init__(self, store: Store, policy: Policy, namespace: str, steps: list[_Step], patient: str | None) -> None:
        self.store = store
        self.policy = policy
        self.namespace = namespace
        self.steps = [s for s in steps if s.rule.kind != "drop"]
        self.patient = patient
        self.released = tuple(s.column.name for s in self.steps)
        self.policy_name = policy.name
        self.policy_sha256 = policy.sha256
        self._pseudonym_of: dict[str, str] = {}
        self._zero: dict[str, date] | None = None
        self.blanked: Counter = Counter()

    def apply(self, rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """The released columns of every row that belongs to a patient, page by page."""
        functions = [(s.column.name, column_function(s.rule, s.column, self.policy, self._pseudonym_of,
                                                      self.blanked, s.column.name)) for s in self.steps]
        keys = [s.column.name for s in self.steps if s.rule.kind == "pseudonym"]
        zero = self._day_zero() if any(s.rule.kind in _DATED for s in self.steps) else {}
        while page := list(islice(rows, PAGE)):
            if self.patient is not None:
                page = [row for row in page if row.get(self.patient) is not None]
            wanted = {str(row[k]) for row in page for k in keys if row.get(k) is not None} - set(self._pseudonym_of)
            if wanted:
                self._pseudonym_of.update(pseudonyms(self.store, self.namespace, sorted(wanted), self.policy))
            for row in page:
                day = zero.get(row[self.patient]) if self.patient is not None else None
                yield {name: function(_text(row.get(name)) if name in keys else row.get(name), day)
                       for name, function in functions}

    def _day_zero(self) -> dict[str, date]:
        """Each patient's day zero as the analysis export finds it (its policy's reference views)."""
        if self._zero is None:
            named = {ref.view for ref in (self.policy.reference, self.policy.fallback) if ref is not None}
            views = [v for v in analysis_views() if v.resource == "Patient" or v.name in named]
            source = read_cohort(self.store, views, Cohort("all patients", None, None))
            self._zero = reference_days(source, self.policy)[0]
        return self._zero


def _text(value: Any) -> Any:
    return None if value is None else str(value)


def deidentification(store: Store, key: str | None, run: ViewRun, policy_name: str | None) -> ViewDeidentification:
    """The checked policy for ``run``'s view: 400 for an unknown policy, 503 without a key, 422
    naming the first refused column (every problem is in the message)."""
    policy = load_policy(policy_name)
    namespace = namespace_for(checked_key(key))
    try:
        view = view_from(run.definition, "request", "view")
    except ViewDefinitionError as exc:  # compiled before, so only a view the policy check cannot walk
        raise PolicyError(f"The view cannot be checked against the policy: {exc}", "viewResource") from exc
    rules = _rules_for(policy, run)
    # what a view reads is refused first (whatever the rules), then what the rules cannot cover
    reading: list[tuple[str, str]] = []
    problems: list[tuple[str, str]] = []
    for index, where in enumerate(run.definition.get("where") or []):
        reading += [(f"where[{index}]", f"where[{index}] {m}") for m in _path_problems(policy, [str(where.get("path", ""))])]
    steps: list[_Step] = []
    for column in view.columns:
        reading += [(column.name, f"column '{column.name}' {m}") for m in _path_problems(policy, column.paths)]
        rule = rules.get(column.name)
        if rule is None:
            problems.append((column.name, f"column '{column.name}' has no rule in policy '{policy.name}' (its rules "
                             "cover the guide's views as published)"))
        else:
            problems += [(column.name, f"column '{column.name}' {m}") for m in _rule_problems(policy, column, rule)]
            steps.append(_Step(column, rule))
    patient = next((s.column.name for s in steps if s.rule.kind == "pseudonym"), None)
    for step in steps:
        if step.rule.kind in _DATED and patient is None:
            problems.append((step.column.name, f"column '{step.column.name}' is a date ({step.rule.kind}) but the view "
                             "has no patient column (rule pseudonym) to find the patient's day zero"))
    problems = reading + problems
    if problems:
        raise PolicyError(f"Policy '{policy.name}' refuses this view: " + "; ".join(m for _, m in problems),
                          problems[0][0])
    return ViewDeidentification(store, policy, namespace, steps, patient)


def _rules_for(policy: Policy, run: ViewRun) -> Mapping[str, Rule]:
    """The policy's rules of the guide view ``run`` is (by name or canonical URL); none for another view."""
    names = [str(run.definition.get(k)) for k in ("name", "url") if run.definition.get(k)]
    if not run.from_guide:
        guide = next((g for g in _guide_views() if any(n in (g.get("name"), g.get("url")) for n in names)), None)
        if guide is None or _essence(guide) != _essence(run.definition):
            return {}
    return next((policy.columns[n] for n in names if n in policy.columns), {})


def _guide_views() -> list[dict]:
    return [orjson.loads(p.read_bytes()) for p in sorted(folder("views").glob("*.json"))]


def _essence(view: Mapping[str, Any]) -> bytes:
    """What decides a view's rows: an inline copy must match the guide's view in all of it."""
    keys = ("resource", "select", "where", "constant")
    return orjson.dumps({k: view.get(k) for k in keys}, option=orjson.OPT_SORT_KEYS)


def _path_problems(policy: Policy, paths: tuple[str, ...] | list[str]) -> list[str]:
    elements: set[str] = set().union(*(path_elements(p) for p in paths)) if paths else set()
    problems = []
    if forbidden := elements & policy.never_read:
        problems.append(f"reads {', '.join(sorted(forbidden))}, which never leaves")
    if unnamed := elements & UNNAMED_READS:
        problems.append(f"uses {', '.join(sorted(unnamed))}(), which reads elements it does not name")
    return problems


def _rule_problems(policy: Policy, column: ViewColumn, rule: Rule) -> list[str]:
    """The checks ``check_policy`` makes of one analysis view column, for one view column."""
    problems = []
    elements: set[str] = set().union(*(path_elements(p) for p in column.paths))
    for element in sorted(elements & set(policy.restricted_read)):
        if rule.kind not in policy.restricted_read[element]:
            problems.append(f"reads {element} and may only be {'/'.join(sorted(policy.restricted_read[element]))}")
    if rule.kind in ("keep", "map") and column.type in TEMPORAL:
        problems.append("is a date: use day-offset, age-band or drop")
    if rule.kind in _DATED and column.type not in TEMPORAL:
        problems.append(f"is not a date: {rule.kind} does not apply")
    if rule.kind == "keep" and column.type in TEXT and rule.pattern is None and column.allowed is None:
        problems.append("is text without a closed vocabulary")
    return problems
