"""A synthetic multicentre MRgFUS cohort, written as site registry rows (the real import path).

Three sites: ``A`` is shaped like the published 13-patient study (baseline TWSTRS total around
22 [16; 25], last around 6 [4; 9], one or two sessions, PTT / Vo / both, ~13 months follow-up);
``B`` and ``C`` are larger and noisier. Everything comes from one seeded RNG, so the cohort is the
same on every machine. Nothing here is real patient data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta

from fhirfus.domain import twstrs

SUBTYPES = ("torticollis", "laterocollis", "anterocollis", "retrocollis", "torticollis+laterocollis",
            "torticollis+retrocollis")
TARGETS = ("PTT", "Vo", "PTT+Vo")
ADVERSE = ("headache", "vertigo", "nausea", "dysarthria", "paresthesia", "ataxia", "dysphagia")
HEADER = ["site_patient_id", "sex", "birth_date", "cd_subtype", "visit_date", "visit_type", "session_number", "target", "side", "sonications", "max_power_w", "max_energy_j", "max_temp_c", "sdr", "adverse_events"]


@dataclass(frozen=True)
class SiteShape:
    code: str
    patients: int
    baseline_fraction: tuple[float, float]   # share of the maximum item score at baseline
    relief: tuple[float, float]              # share of the baseline left at the last visit
    second_session: float                    # probability of a staged second session


SITES = (
    SiteShape("A", 13, (0.17, 0.32), (0.10, 0.30), 0.3),
    SiteShape("B", 24, (0.18, 0.40), (0.15, 0.70), 0.2),
    SiteShape("C", 23, (0.15, 0.38), (0.25, 0.85), 0.1),
)


def _item_ranges() -> list[tuple[str, str, int]]:
    """(column, linkId, max) of every scored TWSTRS item, from the Questionnaire."""
    definition = twstrs.versions()[twstrs.DEFAULT_VERSION].definition
    items = []
    for link_id, item in definition.items.items():
        if item.type == "integer" and not item.read_only and item.maximum is not None:
            column = "twstrs_" + link_id.replace(".", "_").replace("-", "_")
            items.append((column, link_id, int(item.maximum)))
    return items


def twstrs_columns() -> list[str]:
    return [column for column, _, _ in _item_ranges()]


def _answers(rng: random.Random, fraction: float) -> dict[str, str]:
    answers = {}
    for column, _, maximum in _item_ranges():
        value = round(fraction * maximum + rng.gauss(0, 0.4))
        answers[column] = str(min(maximum, max(0, value)))
    return answers


def _visit(pid: str, sex: str, birth: date, subtype: str, day: date, kind: str, **fields: str) -> dict[str, str]:
    row = dict.fromkeys(HEADER, "")
    row.update(site_patient_id=pid, sex=sex, birth_date=birth.isoformat(), cd_subtype=subtype,
               visit_date=day.isoformat(), visit_type=kind, **fields)
    return row


def _session(rng: random.Random, number: int, target: str) -> dict[str, str]:
    events = [e for e in ADVERSE if rng.random() < 0.08]
    return {
        "session_number": str(number), "target": target, "side": rng.choice("LLRB"),
        "sonications": str(rng.randint(6, 22)), "max_power_w": str(rng.choice((450, 600, 750, 900))),
        "max_energy_j": str(rng.randint(9000, 26000)), "max_temp_c": str(rng.randint(52, 60)),
        "sdr": f"{rng.uniform(0.36, 0.62):.2f}", "adverse_events": ";".join(events),
    }


def patient_rows(rng: random.Random, shape: SiteShape, number: int) -> list[dict[str, str]]:
    pid = f"{shape.code}{number:03d}"
    sex = rng.choice("FFM")
    birth = date(rng.randint(1950, 1995), rng.randint(1, 12), rng.randint(1, 28))
    subtype = rng.choice(SUBTYPES)
    baseline_day = date(2021, 6, 1) + timedelta(days=rng.randint(0, 600))
    first_session = baseline_day + timedelta(days=rng.randint(10, 45))
    target = rng.choice(TARGETS)
    fraction = rng.uniform(*shape.baseline_fraction)
    rows = [_visit(pid, sex, birth, subtype, baseline_day, "baseline") | _answers(rng, fraction)]
    rows.append(_visit(pid, sex, birth, subtype, first_session, "session") | _session(rng, 1, target))
    if rng.random() < shape.second_session:
        second = first_session + timedelta(days=rng.randint(120, 240))
        rows.append(_visit(pid, sex, birth, subtype, second, "session") | _session(rng, 2, rng.choice(TARGETS)))
    follow_up_days = max(240, int(rng.gauss(13.3, 3.4) * 30.4375))
    relief = rng.uniform(*shape.relief)
    for day in sorted({30, 91, 182, 365, follow_up_days}):
        if day > follow_up_days:
            continue
        progress = min(1.0, day / 182)
        share = fraction * (1 - progress * (1 - relief))
        rows.append(_visit(pid, sex, birth, subtype, first_session + timedelta(days=day), "follow-up")
                    | _answers(rng, share))
    return rows


def cohort(seed: int = 2021) -> dict[str, list[dict[str, str]]]:
    """Site code → registry rows (header order: ``HEADER`` + TWSTRS item columns)."""
    rng = random.Random(seed)
    return {shape.code: [row for n in range(1, shape.patients + 1) for row in patient_rows(rng, shape, n)]
            for shape in SITES}
