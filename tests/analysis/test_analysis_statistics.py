"""Cohort statistics (domain.md §5) against numpy/scipy, recomputed from the site file itself.

The cohort is generated as a site-registry CSV and imported through the real mapping; the
expected figures are computed here from the CSV rows (TWSTRS scored by hand, dates as dates),
independently of the views, the de-identification and the dataset builder.
"""

from __future__ import annotations

import csv
import json
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from fhirfus.analysis.export import run_analysis
from fhirfus.db import migrate
from fhirfus.db.engine import make_engine
from fhirfus.domain.conformance import load_conformance
from fhirfus.domain.synthetic_cohort import cohort_rows, write_site_file
from fhirfus.ingest.site_import import import_files
from fhirfus.store.repository import Store

KEY = "statistics-test-key-0123456789"
TARGETS = {"PTT": "pallidothalamic-tract", "Vo": "vo-complex"}
PATIENTS = 60


def _score(row: dict[str, str], score: str) -> float | None:
    def items(prefix: str) -> dict[str, int] | None:
        found = {k.removeprefix(prefix): row[k] for k in row if k.startswith(prefix)}
        return None if any(v == "" for v in found.values()) else {k: int(v) for k, v in found.items()}

    severity, disability, pain = items("twstrs_severity_"), items("twstrs_disability_"), items("twstrs_pain_")
    parts = {
        "severity": None if severity is None else sum(severity.values()) + severity["duration"],
        "disability": None if disability is None else sum(disability.values()),
        "pain": None if pain is None else (pain["worst"] + pain["best"] + 2 * pain["usual"]) / 4
        + pain["duration"] + pain["disability"],
    }
    if score == "total":
        return None if None in parts.values() else sum(parts.values())
    return parts[score]


def expected_patients(path: Path) -> list[dict]:
    """Per patient, from the CSV: targets, first session, baseline/last per score, follow-up days."""
    by_patient: dict[str, list[dict[str, str]]] = {}
    for row in csv.DictReader(path.open(encoding="utf-8")):
        by_patient.setdefault(row["site_patient_id"], []).append(row)
    out = []
    for rows in by_patient.values():
        sessions = [r for r in rows if r["visit_type"] == "session"]
        first = min(date.fromisoformat(r["visit_date"]) for r in sessions)
        targets = {TARGETS[t] for r in sessions for t in r["target"].split("+")}
        visits = sorted((date.fromisoformat(r["visit_date"]), r) for r in rows if r["visit_type"] != "session")
        patient = {"target": "+".join(sorted(targets)), "first": first,
                   "follow_up": max(((d - first).days for d, _ in visits if d > first), default=None)}
        for score in ("total", "severity", "disability", "pain"):
            values = [(d, _score(r, score)) for d, r in visits]
            before = [v for d, v in values if d <= first and v is not None]
            after = [v for d, v in values if d > first and v is not None]
            patient[score] = (before[-1] if before else None, after[-1] if after else None)
        patient["included"] = None not in patient["total"]
        out.append(patient)
    return out


def expected_statistics(patients: list[dict], score: str) -> dict:
    pairs = [p[score] for p in patients if p["included"] and None not in p[score]]
    baseline = np.array([b for b, _ in pairs], dtype=float)
    last = np.array([v for _, v in pairs], dtype=float)
    improvement = np.array([100 * (b - v) / b for b, v in pairs if b != 0])
    return {"baseline": baseline, "last": last, "improvement": improvement,
            "t": stats.ttest_rel(baseline, last), "w": stats.wilcoxon(baseline, last)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict]]:
    load_conformance()
    root = tmp_path_factory.mktemp("analysis-statistics")
    engine = make_engine(f"sqlite:///{root / 'fhirfus.db'}")
    migrate.upgrade(engine)
    store = Store(engine)
    site_file = write_site_file(root / "site.csv", cohort_rows(PATIENTS, seed=7))
    report = import_files(store, "site-registry", "ST", [site_file])
    assert report.ok, report.errors[:3]
    run_analysis(store, None, root / "out", "csv", key=KEY)
    engine.dispose()
    return json.loads((root / "out" / "statistics.json").read_text()), expected_patients(site_file)


def _close(actual: float | None, expected: float) -> bool:
    return actual is not None and np.isclose(actual, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("score", ["total", "severity", "disability", "pain"])
def test_baseline_and_last_summaries_match_numpy(exported: tuple[dict, list[dict]], score: str) -> None:
    statistics, patients = exported
    want = expected_statistics(patients, score)
    for part in ("baseline", "last"):
        got, values = statistics["scores"][score][part], want[part]
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        assert got["n"] == len(values)
        for name, value in (("median", median), ("q1", q1), ("q3", q3), ("mean", np.mean(values)),
                            ("sd", np.std(values, ddof=1))):
            assert _close(got[name], value), (part, name, got[name], value)


@pytest.mark.parametrize("score", ["total", "severity", "disability", "pain"])
def test_improvement_quartiles_match_numpy(exported: tuple[dict, list[dict]], score: str) -> None:
    statistics, patients = exported
    values = expected_statistics(patients, score)["improvement"]
    got = statistics["scores"][score]["improvement_percent"]
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    assert (_close(got["median"], median), _close(got["q1"], q1), _close(got["q3"], q3)) == (True, True, True)


@pytest.mark.parametrize("score", ["total", "severity", "disability", "pain"])
def test_paired_t_and_wilcoxon_match_scipy(exported: tuple[dict, list[dict]], score: str) -> None:
    statistics, patients = exported
    want = expected_statistics(patients, score)
    got = statistics["scores"][score]
    assert _close(got["paired_t"]["statistic"], want["t"].statistic) and _close(got["paired_t"]["p"], want["t"].pvalue)
    assert _close(got["wilcoxon"]["statistic"], want["w"].statistic) and _close(got["wilcoxon"]["p"], want["w"].pvalue)


def test_follow_up_months_are_days_over_30_4375_of_included_patients(exported: tuple[dict, list[dict]]) -> None:
    statistics, patients = exported
    months = np.array([p["follow_up"] / 30.4375 for p in patients if p["included"]])
    assert _close(statistics["follow_up_months"]["mean"], months.mean())
    assert _close(statistics["follow_up_months"]["sd"], months.std(ddof=1))


def test_patients_without_both_assessments_are_counted_as_excluded(exported: tuple[dict, list[dict]]) -> None:
    statistics, patients = exported
    excluded = sum(not p["included"] for p in patients)
    assert excluded > 0  # the generator makes some on purpose
    assert statistics["cohort"] == {**statistics["cohort"], "patients": len(patients), "excluded": excluded}
    assert sum(statistics["cohort"]["excluded_by_reason"].values()) == excluded


def test_each_target_group_has_its_own_statistics(exported: tuple[dict, list[dict]]) -> None:
    statistics, patients = exported
    targets = sorted({p["target"] for p in patients})
    assert sorted(statistics["by_target"]) == targets
    for target in targets:
        group = [p for p in patients if p["target"] == target]
        want = expected_statistics(group, "total")
        got = statistics["by_target"][target]
        assert got["patients"] == len(group)
        assert got["scores"]["total"]["baseline"]["n"] == len(want["baseline"])
        assert _close(got["scores"]["total"]["last"]["median"], float(np.median(want["last"])))


def test_statistics_json_has_the_documented_shape(exported: tuple[dict, list[dict]]) -> None:
    statistics, _ = exported
    assert {"patients", "excluded"} <= set(statistics["cohort"])
    assert {"mean", "sd"} <= set(statistics["follow_up_months"])
    for block in [statistics, *statistics["by_target"].values()]:
        assert set(block["scores"]) == {"total", "severity", "disability", "pain"}
        for score in block["scores"].values():
            assert {"n", "median", "q1", "q3", "mean", "sd"} <= set(score["baseline"]) == set(score["last"])
            assert {"median", "q1", "q3"} <= set(score["improvement_percent"])
            assert set(score["paired_t"]) == set(score["wilcoxon"]) == {"statistic", "p"}
    assert all("patients" in group for group in statistics["by_target"].values())
