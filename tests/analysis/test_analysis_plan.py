"""The analysis plan's figures (issue #20), each recomputed independently from the site files.

Three sites' registry files are generated, imported through the real mapping, and exported under
the default policy; the tests score the CSV rows by hand, place the assessments in the plan's
windows themselves and recompute every figure with numpy/scipy, to 1e-9. Severity and outcome
of the adverse events are set on the stored resources (the registry layout has no such column),
so the adverse-event table is checked against known values.
"""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import UTC, date, datetime
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats
from sqlalchemy import select

from fhirfus.analysis.export import run_analysis
from fhirfus.analysis.plan import PLAN_PATH, PlanError, load_plan, parse_plan
from fhirfus.db import migrate
from fhirfus.db.engine import make_engine
from fhirfus.db.tables import resources
from fhirfus.db.visibility import EVERYTHING
from fhirfus.domain.conformance import load_conformance
from fhirfus.domain.synthetic_cohort import cohort_rows, write_site_file
from fhirfus.ingest.site_import import import_files
from fhirfus.store.repository import Store, current, replace
from tests.analysis.test_analysis_statistics import TARGETS, _score

KEY = "analysis-plan-test-key-0123456789"
SNAPSHOT = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)
SITES = ("SA", "SB", "SC")
PATIENTS = 40
SEVERITY_OF = {"headache": "mild", "vertigo": "moderate", "nausea": "mild", "dysarthria": "severe"}
RESOLVED_TERMS = {"headache", "nausea", "vertigo"}
PARAMETERS = {"sonications": "sonications", "max_power_w": "max_power_w", "max_energy_j": "max_energy_j",
              "max_temp_c": "max_temperature_c", "sdr": "sdr"}


# --- the cohort as the site files say it is ---------------------------------------------------


def expected_patients(site: str, path: Path) -> list[dict[str, Any]]:
    by_patient: dict[str, list[dict[str, str]]] = {}
    for row in csv.DictReader(path.open(encoding="utf-8")):
        by_patient.setdefault(row["site_patient_id"], []).append(row)
    out = []
    for rows in by_patient.values():
        sessions = [r for r in rows if r["visit_type"] == "session"]
        first = min(date.fromisoformat(r["visit_date"]) for r in sessions)
        visits = sorted(((date.fromisoformat(r["visit_date"]) - first).days, r) for r in rows
                        if r["visit_type"] != "session")
        targets = {TARGETS[t] for r in sessions for t in r["target"].split("+")}
        patient: dict[str, Any] = {"site": site, "sex": {"F": "female", "M": "male"}[rows[0]["sex"]],
                                   "target": "+".join(sorted(targets)), "sessions": sessions,
                                   "events": [e for r in sessions for e in r["adverse_events"].split(";") if e]}
        for score in ("total", "severity", "disability", "pain"):
            scored = [(day, _score(r, score)) for day, r in visits]
            scored = [(day, v) for day, v in scored if v is not None]
            before = [v for day, v in scored if day <= 0]
            after = [v for day, v in scored if day > 0]
            patient[f"{score}_baseline"] = before[-1] if before else None
            patient[f"{score}_last"] = after[-1] if after else None
            for window in load_plan().windows:
                inside = [(abs(day - window.nominal_day), day, v) for day, v in scored
                          if window.from_day <= day <= window.to_day]
                patient[f"{window.name}_{score}"] = min(inside)[2] if inside else None
        patient["included"] = patient["total_baseline"] is not None and patient["total_last"] is not None
        out.append(patient)
    return out


def _set_event_details(store: Store) -> None:
    """Give the imported adverse events a severity and an outcome that depend on their term."""
    with store.writing() as conn:
        ids = conn.execute(select(resources.c.res_id).where(resources.c.res_type == "AdverseEvent")).scalars().all()
        for res_id in ids:
            stored = current(conn, EVERYTHING, "AdverseEvent", res_id, for_update=True)
            assert stored is not None and stored.content is not None
            content = dict(stored.content)
            term = content["event"]["coding"][0]["code"]
            if term in SEVERITY_OF:
                content["severity"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/adverse-event-severity",
                                                   "code": SEVERITY_OF[term]}]}
            outcome = "resolved" if term in RESOLVED_TERMS else "ongoing"
            content["outcome"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/adverse-event-outcome",
                                              "code": outcome}]}
            replace(conn, stored, content)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict], Path]:
    load_conformance()
    root = tmp_path_factory.mktemp("analysis-plan")
    engine = make_engine(f"sqlite:///{root / 'fhirfus.db'}")
    migrate.upgrade(engine)
    store = Store(engine)
    patients: list[dict] = []
    for number, site in enumerate(SITES, start=1):
        site_file = write_site_file(root / f"{site}.csv", cohort_rows(PATIENTS, seed=number * 11, prefix=site))
        report = import_files(store, "site-registry", site, [site_file])
        assert report.ok, report.errors[:3]
        patients += expected_patients(site, site_file)
    _set_event_details(store)
    run_analysis(store, None, root / "out", "csv", key=KEY, snapshot=SNAPSHOT)
    engine.dispose()
    return json.loads((root / "out" / "statistics.json").read_text()), patients, root / "out"


def close(actual: float | None, expected: float | None) -> bool:
    if expected is None:
        return actual is None
    return actual is not None and bool(np.isclose(actual, expected, rtol=1e-9, atol=1e-9))


# --- independent recomputations ----------------------------------------------------------------


def signed_rank_null(n: int) -> np.ndarray:
    """P(T⁺ = t) by enumerating every sign pattern (small n only)."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    for signs in product((0, 1), repeat=n):
        counts[sum(rank for rank, s in zip(range(1, n + 1), signs, strict=True) if s)] += 1
    return counts / 2 ** n


def hl_expected(d: np.ndarray, confidence: float = 0.95, exact_max_n: int = 50) -> dict[str, Any]:
    n = len(d)
    walsh = np.sort([(d[i] + d[j]) / 2 for i in range(n) for j in range(i, n)])
    m = len(walsh)
    if n <= exact_max_n:
        null = signed_rank_null(n) if n <= 14 else None
        if null is None:  # the polynomial ∏(1 + x^r), coefficients by convolution
            poly = np.array([1.0])
            for r in range(1, n + 1):
                poly = np.convolve(poly, np.r_[1.0, np.zeros(r - 1), 1.0])
            null = poly / 2 ** n
        cdf = np.cumsum(null)
        k = int(np.sum(cdf <= (1 - confidence) / 2 + 1e-15))
    else:
        z = stats.norm.ppf(0.5 + confidence / 2)
        k = int(np.floor(m / 2 - z * np.sqrt(n * (n + 1) * (2 * n + 1) / 24)))
    return {"estimate": float(np.median(walsh)),
            "ci_low": float(walsh[k - 1]) if k >= 1 else None, "ci_high": float(walsh[m - k]) if k >= 1 else None}


def window_expected(group: list[dict], window: str, score: str) -> dict[str, Any]:
    values = np.array([p[f"{window}_{score}"] for p in group if p[f"{window}_{score}"] is not None], dtype=float)
    pairs = [(p[f"{window}_{score}"], p[f"{score}_baseline"]) for p in group
             if p[f"{window}_{score}"] is not None and p[f"{score}_baseline"] is not None]
    value = np.array([v for v, _ in pairs], dtype=float)
    base = np.array([b for _, b in pairs], dtype=float)
    return {"values": values, "value": value, "base": base, "d": value - base}


# --- the plan -------------------------------------------------------------------------------------


def test_the_plan_is_package_data_named_by_its_hash_in_the_statistics(exported: tuple) -> None:
    statistics, _, _ = exported
    plan = statistics["plan"]
    assert plan["sha256"] == hashlib.sha256(PLAN_PATH.read_bytes()).hexdigest()
    assert plan["source"] == "analysis/plan.yaml"
    assert [(w["name"], w["from_day"], w["to_day"], w["nominal_day"]) for w in plan["windows"]] == [
        ("m3", 60, 120, 90), ("m6", 150, 210, 180), ("m12", 300, 420, 365)]


@pytest.mark.parametrize("change, problem", [
    (("nominal_day: 90}", "nominal_day: 130}"), "nominal day outside"),
    (("from_day: 150,", "from_day: 100,"), "overlaps"),
    (("outcomes: [total, severity, disability, pain]", "outcomes: [total, mood]"), "unknown outcome"),
    (("adjust: holm", "adjust: bonferroni"), "targets.adjust: 'bonferroni' is not implemented"),
    (("median_change: hodges-lehmann", "median_change: bootstrap"), "'bootstrap' is not implemented"),
    (("fixed: window * target", "fixed: window + target"), "model.fixed"),
])
def test_a_broken_plan_is_refused_naming_the_problem(change: tuple[str, str], problem: str) -> None:
    text = PLAN_PATH.read_text(encoding="utf-8")
    broken = text.replace(*change)
    assert broken != text
    with pytest.raises(PlanError, match=problem):
        parse_plan(broken.encode(), "analysis/broken.yaml")


# --- windows --------------------------------------------------------------------------------------


def _groups(patients: list[dict]) -> list[tuple[str, str | None, list[dict]]]:
    out: list[tuple[str, str | None, list[dict]]] = [("overall", None, patients)]
    out += [("by_target", t, [p for p in patients if p["target"] == t]) for t in sorted({p["target"] for p in patients})]
    out += [("by_site", s, [p for p in patients if p["site"] == s]) for s in SITES]
    return out


@pytest.mark.parametrize("score", ["total", "severity", "disability", "pain"])
def test_window_values_and_changes_match_an_independent_recomputation(exported: tuple, score: str) -> None:
    statistics, patients, _ = exported
    checked = 0
    for kind, name, group in _groups(patients):
        block = statistics["windows"][kind] if name is None else statistics["windows"][kind][name]
        for window in ("m3", "m6", "m12"):
            got, want = block[window][score], window_expected(group, window, score)
            assert got["n"] == len(want["values"]), (kind, name, window)
            q1, median, q3 = np.percentile(want["values"], [25, 50, 75])
            assert (close(got["value"]["median"], median), close(got["value"]["q1"], q1),
                    close(got["value"]["q3"], q3)) == (True, True, True)
            change, d = got["change"], want["d"]
            assert change["n"] == len(d)
            low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
            assert close(change["mean"]["mean"], d.mean())
            assert close(change["mean"]["ci_low"], low) and close(change["mean"]["ci_high"], high)
            hl = hl_expected(d)
            assert close(change["hodges_lehmann"]["estimate"], hl["estimate"])
            assert close(change["hodges_lehmann"]["ci_low"], hl["ci_low"])
            assert close(change["hodges_lehmann"]["ci_high"], hl["ci_high"])
            t = stats.ttest_rel(want["value"], want["base"])
            w = stats.wilcoxon(want["d"])
            assert close(change["paired_t"]["statistic"], t.statistic) and close(change["paired_t"]["p"], t.pvalue)
            assert close(change["wilcoxon"]["statistic"], w.statistic) and close(change["wilcoxon"]["p"], w.pvalue)
            checked += 1
    assert checked == 3 * (1 + len({p["target"] for p in patients}) + len(SITES))


def test_windows_use_the_exact_interval_for_small_groups_and_the_normal_one_above(exported: tuple) -> None:
    statistics, _, _ = exported
    methods = {cell["change"]["hodges_lehmann"]["method"] for kind in ("by_target", "by_site")
               for group in statistics["windows"][kind].values() for cell in group["m12"].values()}
    assert statistics["windows"]["overall"]["m3"]["total"]["change"]["hodges_lehmann"]["method"] == "normal"
    assert "exact" in methods


# --- tables ---------------------------------------------------------------------------------------


def test_table_one_counts_sex_and_summarises_baseline_sessions_and_follow_up(exported: tuple) -> None:
    statistics, patients, _ = exported
    table = statistics["table_one"]["overall"]
    assert table["patients"]["n"] == len(patients)
    for sex in ("female", "male"):
        n = sum(p["sex"] == sex for p in patients)
        assert table["sex"][sex] == {"n": n, "percent": pytest.approx(100 * n / len(patients), rel=1e-12)}
    baseline = np.array([p["severity_baseline"] for p in patients if p["severity_baseline"] is not None])
    assert close(table["baseline"]["severity"]["median"], float(np.median(baseline)))
    assert table["baseline"]["severity"]["n"] == len(baseline)
    sessions = np.array([len(p["sessions"]) for p in patients], dtype=float)
    assert close(table["sessions"]["q3"], float(np.percentile(sessions, 75)))
    assert close(table["sessions"]["max"], sessions.max())
    for site in SITES:
        assert statistics["table_one"]["by_site"][site]["patients"]["n"] == sum(p["site"] == site for p in patients)


def test_adverse_events_by_term_and_severity_with_resolution(exported: tuple) -> None:
    statistics, patients, _ = exported
    table = statistics["adverse_events"]["overall"]
    terms = sorted({e for p in patients for e in p["events"]})
    assert sorted(table["by_term"]) == terms
    for term in terms:
        row = table["by_term"][term]
        events = sum(p["events"].count(term) for p in patients)
        having = sum(term in p["events"] for p in patients)
        assert row["events"]["n"] == events
        assert row["patients"]["n"] == having
        assert close(row["patients"]["percent"], 100 * having / len(patients))
        severity = SEVERITY_OF.get(term, "not-recorded")
        assert row["by_severity"][severity]["n"] == events
        assert sum(cell["n"] for cell in row["by_severity"].values()) == events
        assert row["resolved"]["n"] == (events if term in RESOLVED_TERMS else 0)
    assert table["any"]["patients"]["n"] == sum(bool(p["events"]) for p in patients)


def test_treatment_parameters_per_session_target(exported: tuple) -> None:
    statistics, patients, _ = exported
    sessions = [s for p in patients for s in p["sessions"]]
    table = statistics["treatment_parameters"]
    assert table["overall"]["sessions"]["n"] == len(sessions)
    for column, name in PARAMETERS.items():
        values = np.array([float(s[column]) for s in sessions])
        got = table["overall"][name]
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        assert [close(got[k], v) for k, v in (("median", median), ("q1", q1), ("q3", q3),
                                              ("min", values.min()), ("max", values.max()))] == [True] * 5
    for code, target in (("PTT", "pallidothalamic-tract"), ("Vo", "vo-complex")):
        values = np.array([float(s["max_power_w"]) for s in sessions if s["target"] == code])
        assert close(table["by_target"][target]["max_power_w"]["median"], float(np.median(values)))


def test_targets_are_compared_by_kruskal_wallis_and_holm_adjusted_mann_whitney(exported: tuple) -> None:
    statistics, patients, _ = exported
    improvement = {t: np.array([100 * (p["total_baseline"] - p["total_last"]) / p["total_baseline"]
                                for p in patients if p["included"] and p["target"] == t])
                   for t in sorted({p["target"] for p in patients})}
    compared = statistics["targets_compared"]
    kw = stats.kruskal(*improvement.values())
    assert close(compared["kruskal_wallis"]["statistic"], kw.statistic) and close(compared["kruskal_wallis"]["p"], kw.pvalue)
    from statsmodels.stats.multitest import multipletests
    raw = [stats.mannwhitneyu(improvement[pair["a"]], improvement[pair["b"]]).pvalue
           for pair in compared["pairwise_mann_whitney"]]
    assert len(raw) == 3
    adjusted = multipletests(raw, method="holm")[1]
    for pair, p, p_holm in zip(compared["pairwise_mann_whitney"], raw, adjusted, strict=True):
        assert close(pair["p"], p) and close(pair["p_holm"], p_holm)


def test_site_heterogeneity_gives_each_site_its_mean_improvement_with_a_t_interval(exported: tuple) -> None:
    statistics, patients, _ = exported
    for site in SITES:
        values = np.array([100 * (p["total_baseline"] - p["total_last"]) / p["total_baseline"]
                           for p in patients if p["included"] and p["site"] == site])
        low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
        got = statistics["site_heterogeneity"]["by_site"][site]
        assert got["n"] == len(values) and close(got["mean"], values.mean())
        assert close(got["ci_low"], low) and close(got["ci_high"], high)


def test_completeness_flows_from_registered_to_each_window(exported: tuple) -> None:
    statistics, patients, _ = exported
    flow = {step["step"]: step["n"] for step in statistics["completeness"]["flow"]}
    with_baseline = [p for p in patients if p["total_baseline"] is not None]
    assert flow["registered"] == flow["treated"] == len(patients)
    assert flow["with-baseline"] == len(with_baseline)
    for window in ("m3", "m6", "m12"):
        assert flow[f"in-window-{window}"] == sum(p[f"{window}_total"] is not None for p in with_baseline)
    complete = [p for p in with_baseline if all(p[f"{w}_total"] is not None for w in ("m3", "m6", "m12"))]
    got = statistics["completeness"]["complete_case"]
    assert got["n"] == len(complete) < flow["in-window-m3"]
    d = np.array([p["m12_total"] - p["total_baseline"] for p in complete])
    assert close(got["m12"]["mean"]["mean"], d.mean())
    available = statistics["completeness"]["all_available"]["m12"]
    assert available["n"] == flow["in-window-m12"]


# --- the report ------------------------------------------------------------------------------


def test_the_report_ends_with_what_reproduces_it(exported: tuple) -> None:
    statistics, _, out = exported
    report = (out / "report.html").read_text()
    footer = report.split("<footer")[1]
    from fhirfus import __version__
    from fhirfus.analysis.deid.policy import load_policy
    assert "Data snapshot: 2026-12-01T08:30:00Z" in footer
    assert f"fhirfus {__version__}" in footer and "implementation guide" in footer
    assert hashlib.sha256(PLAN_PATH.read_bytes()).hexdigest() in footer
    assert load_policy("safe-harbor").sha256 in footer
    assert statistics["provenance"]["plan_sha256"] == statistics["plan"]["sha256"]


def test_the_report_has_the_plans_tables_and_plots(exported: tuple) -> None:
    _, _, out = exported
    report = (out / "report.html").read_text()
    for heading in ("Table 1: patients at baseline", "Adverse events", "Treatment parameters per session",
                    "Outcomes by visit window (all patients)", "Targets compared",
                    "Site heterogeneity: improvement by site (forest plot)", "Completeness of follow-up",
                    "Longitudinal model of the TWSTRS total"):
        assert f"<h2>{heading}" in report, heading
    assert report.count("<img ") == 5  # paired, trajectory, improvement, windows by window, forest
    assert "Maximal power, watts" in report and "Sonications, count" in report


def test_the_dictionary_gives_units_in_words(exported: tuple) -> None:
    _, _, out = exported
    rows = list(csv.DictReader((out / "dictionary.csv").open(encoding="utf-8")))
    units = {r["column"]: r["unit"] for r in rows if r["file"] == "patients.csv"}
    assert units["age_band"] == "years" and units["follow_up_days"] == "days"
    assert units["total_baseline"] == "score points" and units["total_improvement_percent"] == "percent"
    assert not {"a", "d", "1", "{score}", "%"} & {r["unit"] for r in rows}
    export = {r["column"]: r["value"] for r in rows if r["file"] == "export"}
    assert export["analysis_plan_sha256"] == hashlib.sha256(PLAN_PATH.read_bytes()).hexdigest()


def test_the_reports_tables_have_a_column_per_released_site(exported: tuple) -> None:
    statistics, _, out = exported
    report = (out / "report.html").read_text()
    table_one = report.split("<h2>Table 1: patients at baseline</h2>")[1].split("</table>")[0]
    events = report.split("<h2>Adverse events</h2>")[1].split("<h2>")[0]
    for site in SITES:
        assert site in statistics["table_one"]["by_site"]
        assert f"<th>site {site}</th>" in table_one, site
        assert f"<th>site {site}</th>" in events, site
