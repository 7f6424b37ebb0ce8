"""The analysis plan (``fhirfus/ig/analysis/plan.yaml``): outcomes, visit windows, tests, model.

The plan is data so that a statistician can read and change it without reading code, and so that
every export can name the exact plan it followed (name and sha256 of the file's bytes, verifiable
with ``sha256sum``), as it names its de-identification policy.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from fhirfus.analysis.dataset import SCORES
from fhirfus.ig import folder

PLAN_PATH = folder("analysis") / "plan.yaml"


#: What this code implements, per plan entry: a plan naming anything else is refused rather than
#: silently analysed another way.
IMPLEMENTED = {
    ("tests", "mean_change"): {"paired-t"}, ("tests", "median_change"): {"hodges-lehmann"},
    ("tests", "paired"): {"paired-t", "wilcoxon"}, ("targets", "omnibus"): {"kruskal-wallis"},
    ("targets", "pairwise"): {"mann-whitney"}, ("targets", "adjust"): {"holm"},
    ("targets", "outcome"): {"improvement-percent"}, ("sites", "outcome"): {"improvement-percent"},
    ("sites", "interval"): {"t"}, ("model", "fixed"): {"window * target"},
    ("model", "random_intercept"): {"patient"}, ("groups", ""): {"overall", "target", "site"},
}


def _unimplemented(raw: dict[str, Any]) -> list[str]:
    tests = raw.get("tests") or {}
    found = {
        ("tests", "mean_change"): tests.get("mean_change"), ("tests", "median_change"): tests.get("median_change"),
        ("tests", "paired"): tests.get("paired"), ("model", "fixed"): (raw.get("model") or {}).get("fixed"),
        ("model", "random_intercept"): (raw.get("model") or {}).get("random_intercept"),
        ("groups", ""): raw.get("groups"),
    }
    for part in ("targets", "sites"):
        for key, value in (tests.get(part) or {}).items():
            found[(part, key)] = value
    problems = []
    for (part, key), value in found.items():
        values = value if isinstance(value, list) else [value]
        allowed = IMPLEMENTED.get((part, key))
        for item in values:
            if item is not None and (allowed is None or str(item) not in allowed):
                problems.append(f"{part}.{key}: {item!r} is not implemented" if key else f"{part}: {item!r} is not implemented")
    return problems


class PlanError(ValueError):
    """The plan file is not a usable plan (a packaging error, caught by the tests)."""


@dataclass(frozen=True)
class Window:
    name: str
    label: str
    from_day: int
    to_day: int
    nominal_day: int


@dataclass(frozen=True)
class Plan:
    name: str
    title: str
    version: str
    sha256: str
    source: str
    outcomes: tuple[str, ...]
    windows: tuple[Window, ...]
    confidence: float
    hodges_lehmann_exact_max_n: int
    model_outcome: str
    site_random_min_sites: int
    groups: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """What statistics.json says about the plan (enough to find the file and check it)."""
        return {
            "name": self.name, "title": self.title, "version": self.version, "sha256": self.sha256,
            "source": self.source, "outcomes": list(self.outcomes), "confidence": self.confidence,
            "windows": [w.__dict__ for w in self.windows],
        }


def parse_plan(data: bytes, source: str) -> Plan:
    """Parse and check a plan document; its hash is over the exact bytes."""
    try:
        raw = yaml.safe_load(data)
        windows = tuple(Window(str(w["name"]), str(w["label"]), int(w["from_day"]), int(w["to_day"]),
                               int(w["nominal_day"])) for w in raw["windows"])
        tests = raw.get("tests") or {}
        model = raw.get("model") or {}
        plan = Plan(
            name=str(raw["name"]), title=str(raw.get("title", raw["name"])), version=str(raw.get("version", "")),
            sha256=hashlib.sha256(data).hexdigest(), source=source,
            outcomes=tuple(str(o) for o in raw["outcomes"]), windows=windows,
            confidence=float(raw.get("confidence", 0.95)),
            hodges_lehmann_exact_max_n=int(tests.get("hodges_lehmann_exact_max_n", 50)),
            model_outcome=str(model.get("outcome", "total")),
            site_random_min_sites=int(model.get("site_random_intercept_min_sites", 3)),
            groups=tuple(str(g) for g in raw.get("groups", ["overall", "target"])),
        )
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise PlanError(f"{source}: invalid analysis plan ({type(exc).__name__}: {exc})") from exc
    problems = [f"unknown outcome {o!r}" for o in plan.outcomes if o not in SCORES]
    problems += [f"window {w.name}: nominal day outside {w.from_day}–{w.to_day}" for w in windows
                 if not w.from_day <= w.nominal_day <= w.to_day]
    problems += [f"window {b.name} overlaps {a.name}" for a, b in itertools.pairwise(windows)
                 if b.from_day <= a.to_day]
    problems += _unimplemented(raw)
    if raw.get("ties", "earlier") != "earlier":
        problems.append("ties: only 'earlier' is implemented")
    if not 0 < plan.confidence < 1:
        problems.append("confidence must be between 0 and 1")
    if problems:
        raise PlanError(f"{source}: " + "; ".join(problems))
    return plan


@cache
def load_plan(path: Path = PLAN_PATH) -> Plan:
    return parse_plan(path.read_bytes(), f"analysis/{path.name}")
