"""Synthetic MRgFUS cohorts as site-registry files, for the analysis tests and the benchmark.

Data enters through the real import path (``fhirfus import --mapping site-registry``), so the
analysis is exercised on exactly what sites produce: one row per baseline, session or follow-up
visit (layout: shared/data/site-registry/README.md). A seeded generator gives reproducible
cohorts with the awkward cases on purpose: patients without a baseline or without a follow-up,
two baselines, two sessions with different targets, ages over 89, incomplete pain subscales.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

SEVERITY = {"rotation": 4, "laterocollis": 3, "anterocollis_retrocollis": 3, "lateral_shift": 1, "sagittal_shift": 1,
            "duration": 5, "sensory_tricks": 2, "shoulder": 3, "range_of_motion": 4, "time": 4}
DISABILITY = {"work": 5, "adl": 5, "driving": 5, "reading": 5, "television": 5, "outside": 5}
PAIN = {"usual": 10, "best": 10, "worst": 10, "duration": 5, "disability": 5}
ITEMS = {f"twstrs_severity_{k}": v for k, v in SEVERITY.items()} | \
        {f"twstrs_disability_{k}": v for k, v in DISABILITY.items()} | {f"twstrs_pain_{k}": v for k, v in PAIN.items()}
HEADER = ["site_patient_id", "sex", "birth_date", "cd_subtype", "visit_date", "visit_type", "session_number", "target",
          "side", "sonications", "max_power_w", "max_energy_j", "max_temp_c", "sdr", "adverse_events", *ITEMS]
SUBTYPES = ["torticollis", "laterocollis", "anterocollis", "retrocollis", "torticollis+laterocollis"]
TARGETS = ["PTT", "Vo", "PTT+Vo"]
EVENTS = ["headache", "vertigo", "nausea", "dysarthria", "ataxia", "paresthesia", "dysphagia", "fatigue"]
FOLLOW_UP_DAYS = (30, 91, 182, 365, 540, 730)


@dataclass(frozen=True)
class Options:
    start: date = date(2021, 7, 1)
    p_no_baseline: float = 0.05
    p_no_follow_up: float = 0.05
    p_two_sessions: float = 0.3
    p_two_baselines: float = 0.1
    p_incomplete_pain: float = 0.03
    p_very_old: float = 0.03
    #: Known target effects: the patient's improvement share is multiplied by the factor of the
    #: first session's target (``PTT``, ``Vo``, ``PTT+Vo``); none: the same for every target.
    effect_by_target: tuple[tuple[str, float], ...] = ()


def _answers(rng: random.Random, level: float, incomplete: bool) -> dict[str, str]:
    """Item answers around ``level`` (share of each item's maximum), clipped to the item range."""
    values = {}
    for column, top in ITEMS.items():
        value = round(rng.gauss(level * top, 0.18 * top))
        values[column] = str(min(top, max(0, value)))
    if incomplete:
        values["twstrs_pain_worst"] = ""
    return values


def patient_rows(rng: random.Random, key: str, options: Options = Options()) -> list[dict[str, str]]:
    """The visit rows of one synthetic patient."""
    first = options.start + timedelta(days=rng.randrange(0, 900))
    old = rng.random() < options.p_very_old
    born = first - timedelta(days=int(365.25 * (rng.uniform(90.5, 96) if old else rng.uniform(25, 80))))
    person = {"site_patient_id": key, "sex": rng.choice("FM"), "birth_date": born.isoformat(),
              "cd_subtype": rng.choice(SUBTYPES)}
    blank = dict.fromkeys(HEADER, "")
    rows: list[dict[str, str]] = []
    start_level = rng.uniform(0.35, 0.7)
    if rng.random() >= options.p_no_baseline:
        baselines = 2 if rng.random() < options.p_two_baselines else 1
        for offset in sorted(rng.sample(range(60), baselines), reverse=True):
            level = start_level + rng.uniform(-0.05, 0.05)
            rows.append({**blank, **person, "visit_date": (first - timedelta(days=offset)).isoformat(),
                         "visit_type": "baseline", **_answers(rng, level, False)})
    sessions = [first]
    if rng.random() < options.p_two_sessions:
        sessions.append(first + timedelta(days=rng.randrange(120, 300)))
    for number, day in enumerate(sessions, start=1):
        events = rng.sample(EVENTS, k=rng.choice([0, 0, 1, 1, 2]))
        rows.append({**blank, **person, "visit_date": day.isoformat(), "visit_type": "session",
                     "session_number": str(number), "target": rng.choice(TARGETS), "side": rng.choice("LRB"),
                     "sonications": str(rng.randint(6, 20)), "max_power_w": str(rng.randint(400, 1000)),
                     "max_energy_j": str(rng.randint(8000, 30000)), "max_temp_c": str(rng.randint(52, 60)),
                     "sdr": f"{rng.uniform(0.3, 0.7):.2f}", "adverse_events": ";".join(events)})
    if rng.random() >= options.p_no_follow_up:
        effect = rng.uniform(0.3, 0.8)
        first_target = next(r["target"] for r in rows if r["visit_type"] == "session")
        effect = min(1.0, effect * dict(options.effect_by_target).get(first_target, 1.0))
        for days in FOLLOW_UP_DAYS[: rng.randint(3, len(FOLLOW_UP_DAYS))]:
            day = first + timedelta(days=days + rng.randint(-7, 7))
            level = start_level * (1 - effect * min(1.0, days / 180)) + rng.uniform(-0.05, 0.05)
            rows.append({**blank, **person, "visit_date": day.isoformat(), "visit_type": "follow-up",
                         **_answers(rng, max(0.0, level), rng.random() < options.p_incomplete_pain)})
    return rows


def cohort_rows(patients: int, seed: int, prefix: str = "P", options: Options = Options()) -> Iterator[dict[str, str]]:
    rng = random.Random(seed)
    for index in range(patients):
        yield from patient_rows(rng, f"{prefix}{index + 1:05d}", options)


def write_site_file(path: Path, rows: Iterator[dict[str, str]] | list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(rows)
    return path
