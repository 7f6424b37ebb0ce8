"""Small-cell suppression on a cohort built to trip it: three of 30 patients are treated at the
Vo complex only, so under the pooled policy (minimum 5) every figure of that group is withheld,
in statistics.json and in the report, and the report says where. The default policy (minimum 1)
releases the same cells, which shows the suppression is the policy's doing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fhirfus.analysis.disclosure import NOT_CELLS
from fhirfus.analysis.export import run_analysis
from fhirfus.db import migrate
from fhirfus.db.engine import make_engine
from fhirfus.domain.conformance import load_conformance
from fhirfus.domain.synthetic_cohort import cohort_rows, write_site_file
from fhirfus.ingest.site_import import import_files
from fhirfus.store.repository import Store

KEY = "disclosure-test-key-0123456789"
RARE = ("P00001", "P00002", "P00003")


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    load_conformance()
    root = tmp_path_factory.mktemp("analysis-disclosure")
    engine = make_engine(f"sqlite:///{root / 'fhirfus.db'}")
    migrate.upgrade(engine)
    store = Store(engine)
    rows = []
    for row in cohort_rows(30, seed=23):
        if row["visit_type"] == "session":
            row = {**row, "target": "Vo" if row["site_patient_id"] in RARE else "PTT"}
        rows.append(row)
    report = import_files(store, "site-registry", "ST", [write_site_file(root / "site.csv", rows)])
    assert report.ok, report.errors[:3]
    out = {policy: run_analysis(store, None, root / policy, "csv", policy, key=KEY).directory
           for policy in ("safe-harbor", "safe-harbor-pooled")}
    engine.dispose()
    return out


def _statistics(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "statistics.json").read_text())


def _small_cells(block: Any, minimum: int, path: str = "") -> list[str]:
    if isinstance(block, dict):
        n = block.get("n")
        here = [path] if isinstance(n, int) and not isinstance(n, bool) and 0 < n < minimum else []
        return here + [p for k, v in block.items() for p in _small_cells(v, minimum, f"{path}.{k}")]
    if isinstance(block, list):
        return [p for i, v in enumerate(block) for p in _small_cells(v, minimum, f"{path}[{i}]")]
    return []


def test_the_default_policy_releases_the_small_group(exports: dict[str, Path]) -> None:
    statistics = _statistics(exports["safe-harbor"])
    cell = statistics["windows"]["by_target"]["vo-complex"]["m3"]["total"]
    assert 0 < cell["n"] <= 3 and cell["value"]["median"] is not None
    assert statistics["disclosure"] == {"min_cell": 1, "suppressed_cells": 0, "suppressed": []}


def test_no_released_cell_of_the_pooled_export_counts_fewer_than_five(exports: dict[str, Path]) -> None:
    statistics = _statistics(exports["safe-harbor-pooled"])
    assert statistics["disclosure"]["min_cell"] == 5
    assert [p for key, block in statistics.items() if key not in NOT_CELLS for p in _small_cells(block, 5)] == []


def test_the_small_groups_figures_are_withheld_and_listed(exports: dict[str, Path]) -> None:
    statistics = _statistics(exports["safe-harbor-pooled"])
    cell = statistics["windows"]["by_target"]["vo-complex"]["m3"]["total"]
    assert cell["suppressed"] is True and cell["n"] is None
    assert cell["value"]["median"] is None and cell["change"]["mean"]["ci_low"] is None
    assert cell["change"]["paired_t"]["p"] is None
    assert statistics["table_one"]["by_target"]["vo-complex"]["patients"] == {"n": None, "suppressed": True}
    summary = statistics["by_target"]["vo-complex"]
    assert summary["suppressed"] is True and summary["patients"] is None
    assert summary["scores"]["total"]["last"]["median"] is None
    assert statistics["treatment_parameters"]["by_target"]["vo-complex"]["sdr"]["median"] is None
    listed = statistics["disclosure"]["suppressed"]
    assert "windows.by_target.vo-complex.m3.total" in listed
    assert statistics["disclosure"]["suppressed_cells"] == len(listed)
    big = statistics["windows"]["by_target"]["pallidothalamic-tract"]["m3"]["total"]
    assert big["n"] >= 5 and big["value"]["median"] is not None


def test_the_report_shows_suppressed_cells_as_such_and_says_where(exports: dict[str, Path]) -> None:
    report = (exports["safe-harbor-pooled"] / "report.html").read_text()
    assert "Disclosure control" in report and "n &lt; 5" in report
    assert "<code>windows.by_target.vo-complex</code>" in report and "<code>table_one.by_target.vo-complex</code>" in report
    summary = report.split("Summary, overall and per target</h2>")[1].split("</table>")[0]
    vo_column = [row.split("<td>")[-1].split("</td>")[0] for row in summary.split("<tr>")[2:] if "<td>" in row]
    assert len(vo_column) > 30 and set(vo_column) == {"n &lt; 5"}  # the last column is the Vo group
    section = report.split("target vo-complex</h2>")[1].split("</table>")[0]
    assert section.count("n &lt; 5") >= 3
    default = (exports["safe-harbor"] / "report.html").read_text()
    assert "n &lt; " not in default.split("target vo-complex</h2>")[1].split("</table>")[0]


def test_plots_name_and_colour_only_targets_with_enough_patients(exports: dict[str, Path]) -> None:
    import pandas as pd

    from fhirfus.analysis.report import _colours
    patients = pd.read_csv(exports["safe-harbor-pooled"] / "patients.csv")
    assert set(_colours(patients, 5)) == {"pallidothalamic-tract"}
    assert set(_colours(patients, 1)) == {"pallidothalamic-tract", "vo-complex"}


def _count_sets(block: Any, path: str = "") -> list[tuple[str, dict]]:
    """Every set of sibling count cells ({"n", "percent"} blocks side by side)."""
    found: list[tuple[str, dict]] = []
    if isinstance(block, dict):
        values = list(block.values())
        if len(values) >= 2 and all(isinstance(v, dict) and v and set(v) <= {"n", "percent", "suppressed"}
                                    and "n" in v for v in values):
            found.append((path, block))
        for k, v in block.items():
            found += _count_sets(v, f"{path}.{k}")
    return found


def test_no_single_suppressed_count_can_be_recovered_from_its_siblings(exports: dict[str, Path]) -> None:
    statistics = _statistics(exports["safe-harbor-pooled"])
    sets = [(p, b) for key in ("table_one", "adverse_events") for p, b in _count_sets(statistics[key], key)]
    hidden = {p: sum(bool(c.get("suppressed")) for c in b.values()) for p, b in sets}
    assert any(n >= 2 for n in hidden.values())
    by_path = dict(sets)
    assert [p for p, n in hidden.items() if n == 1 and any(c["n"] for c in by_path[p].values())] == []


def _cohort_counts(block: Any) -> list[Any]:
    """Every plain count of excluded patients (totals and per reason) anywhere in ``block``."""
    if isinstance(block, dict):
        here = []
        if isinstance(block.get("excluded_by_reason"), dict):
            here = [block.get("excluded"), *block["excluded_by_reason"].values()]
        return here + [c for v in block.values() for c in _cohort_counts(v)]
    if isinstance(block, list):
        return [c for v in block for c in _cohort_counts(v)]
    return []


def test_counts_of_excluded_patients_are_suppressed_like_cells(exports: dict[str, Path]) -> None:
    released = _cohort_counts(_statistics(exports["safe-harbor"]))
    assert any(isinstance(c, int) and 0 < c < 5 for c in released)  # the cohort does trip it
    pooled = _cohort_counts(_statistics(exports["safe-harbor-pooled"]))
    assert len(pooled) == len(released)
    assert not [c for c in pooled if isinstance(c, int) and 0 < c < 5]
    assert any(p.split(".")[-2:][0] == "excluded_by_reason" or p.endswith(".excluded")
               for p in _statistics(exports["safe-harbor-pooled"])["disclosure"]["suppressed"])
