"""A cohort generated with known target effects: patients first treated at the Vo complex improve
by a third of what the others do. The comparison of targets and the mixed model must find it,
with the right sign, and the model's interval must hold the effect (in points) computed from the
generating site file itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fhirfus.analysis.export import run_analysis
from fhirfus.db import migrate
from fhirfus.db.engine import make_engine
from fhirfus.domain.conformance import load_conformance
from fhirfus.domain.synthetic_cohort import Options, cohort_rows, write_site_file
from fhirfus.ingest.site_import import import_files
from fhirfus.store.repository import Store
from tests.analysis.test_analysis_plan import expected_patients

KEY = "known-effects-test-key-0123456789"
OPTIONS = Options(effect_by_target=(("Vo", 1 / 3),), p_two_sessions=0.0)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict]]:
    load_conformance()
    root = tmp_path_factory.mktemp("analysis-known-effects")
    engine = make_engine(f"sqlite:///{root / 'fhirfus.db'}")
    migrate.upgrade(engine)
    store = Store(engine)
    site_file = write_site_file(root / "site.csv", cohort_rows(150, seed=31, options=OPTIONS))
    report = import_files(store, "site-registry", "ST", [site_file])
    assert report.ok, report.errors[:3]
    run_analysis(store, None, root / "out", "csv", key=KEY)
    engine.dispose()
    return json.loads((Path(root / "out") / "statistics.json").read_text()), expected_patients("ST", site_file)


def test_targets_compared_finds_the_smaller_improvement_at_the_vo_complex(exported: tuple) -> None:
    statistics, _ = exported
    compared = statistics["targets_compared"]
    groups = compared["groups"]
    assert groups["vo-complex"]["median"] < groups["pallidothalamic-tract"]["median"] - 15
    assert compared["kruskal_wallis"]["p"] < 0.001
    pairs = {(p["a"], p["b"]): p for p in compared["pairwise_mann_whitney"]}
    assert pairs[("pallidothalamic-tract", "vo-complex")]["p_holm"] < 0.01
    assert pairs[("pallidothalamic-tract", "pallidothalamic-tract+vo-complex")]["p_holm"] > 0.01


def test_the_model_puts_the_vo_complex_interaction_where_the_data_put_it(exported: tuple) -> None:
    statistics, patients = exported
    model = statistics["model"]
    assert model["converged"] and model["reference"]["target"] == "pallidothalamic-tract"
    estimates = {e["term"]: e for e in model["estimates"]}

    def mean_change(target: str) -> float:
        return float(np.mean([p["m12_total"] - p["total_baseline"] for p in patients if p["target"] == target
                              and p["m12_total"] is not None and p["total_baseline"] is not None]))
    difference = mean_change("vo-complex") - mean_change("pallidothalamic-tract")
    term = estimates["window[m12]:target[vo-complex]"]
    assert difference > 8 and term["ci_low"] > 0           # less improvement: a positive interaction
    assert abs(term["estimate"] - difference) < 2 * term["se"]
    assert estimates["window[m12]"]["ci_high"] < -15        # the reference target improves
