"""The longitudinal model recovers effects planted in a generated cohort, within its intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fhirfus.analysis.longitudinal import fit_model
from fhirfus.analysis.plan import load_plan

INTERCEPT = 45.0
WINDOW = {"baseline": 0.0, "m3": -12.0, "m6": -20.0, "m12": -24.0}
TARGET_B = 3.0
INTERACTION_B = {"m3": 0.0, "m6": -2.0, "m12": -6.0}


def planted(patients: int, sites: int, seed: int) -> pd.DataFrame:
    """Scores = fixed effects + a patient intercept (SD 6) + a site intercept (SD 4) + noise (SD 3)."""
    rng = np.random.default_rng(seed)
    site_effect = rng.normal(0, 4, sites)
    rows = []
    for index in range(patients):
        target = "A" if index % 2 else "B"
        site = (index // 2) % sites  # every site treats both targets
        own = rng.normal(0, 6)
        for window, effect in WINDOW.items():
            if window != "baseline" and rng.random() < 0.1:  # missing visits
                continue
            mean = INTERCEPT + effect + (TARGET_B + INTERACTION_B.get(window, 0.0) if target == "B" else 0.0)
            rows.append({"patient": f"P{index}", "site": f"S{site}", "target": target, "window": window,
                         "value": mean + own + site_effect[site] + rng.normal(0, 3)})
    return pd.DataFrame(rows)


def _truth() -> dict[str, float]:
    truth = {"intercept": INTERCEPT + 0.0, "target[B]": TARGET_B}
    truth |= {f"window[{w}]": e for w, e in WINDOW.items() if w != "baseline"}
    truth |= {f"window[{w}]:target[B]": e for w, e in INTERACTION_B.items()}
    return truth


@pytest.mark.parametrize("site_intercept", [False, True])
def test_planted_window_target_and_interaction_effects_lie_within_their_intervals(site_intercept: bool) -> None:
    data = planted(300, 4, seed=5)
    model = fit_model(data, load_plan(), site_intercept=site_intercept)
    assert model["converged"] is True and model["status"] == "converged"
    assert model["random_intercepts"] == (["site", "patient"] if site_intercept else ["patient"])
    estimates = {e["term"]: e for e in model["estimates"]}
    truth = _truth()
    assert set(estimates) == set(truth)
    for term, value in truth.items():
        if term == "intercept":  # carries the mean of the few drawn site effects
            continue
        assert estimates[term]["ci_low"] <= value <= estimates[term]["ci_high"], (term, estimates[term], value)
        assert estimates[term]["se"] < 2.0
    assert model["observations"] == len(data) and model["patients"] == 300


def test_a_model_without_enough_data_says_so_instead_of_failing() -> None:
    data = planted(2, 1, seed=1)
    model = fit_model(data, load_plan(), site_intercept=False)
    assert model["converged"] is False and model["status"].startswith("not-fitted")


@pytest.mark.parametrize("site_intercept", [False, True])
def test_the_fit_is_the_one_statsmodels_mixedlm_finds(site_intercept: bool) -> None:
    import statsmodels.formula.api as smf
    data = planted(120, 4, seed=9)
    ours = fit_model(data, load_plan(), site_intercept=site_intercept)
    formula = "value ~ C(window, Treatment('baseline')) * C(target)"
    if site_intercept:
        model = smf.mixedlm(formula, data, groups=data["site"], re_formula="1", vc_formula={"patient": "0 + C(patient)"})
    else:
        model = smf.mixedlm(formula, data, groups=data["patient"])
    theirs = model.fit(reml=True, method=["lbfgs"])
    names = {"Intercept": "intercept", "C(target)[T.B]": "target[B]"}
    for w in ("m3", "m6", "m12"):
        names[f"C(window, Treatment('baseline'))[T.{w}]"] = f"window[{w}]"
        names[f"C(window, Treatment('baseline'))[T.{w}]:C(target)[T.B]"] = f"window[{w}]:target[B]"
    estimates = {e["term"]: e for e in ours["estimates"]}
    for their_name, value in theirs.fe_params.items():
        ours_here = estimates[names[str(their_name)]]
        assert ours_here["estimate"] == pytest.approx(value, abs=1e-4)
        assert ours_here["se"] == pytest.approx(theirs.bse_fe[their_name], rel=1e-3)
    assert ours["variance"]["residual"] == pytest.approx(theirs.scale, rel=1e-3)
    their_patient = theirs.vcomp[0] if site_intercept else theirs.cov_re.iloc[0, 0]
    assert ours["variance"]["patient"] == pytest.approx(their_patient, rel=1e-3)
    if site_intercept:
        assert ours["variance"]["site"] == pytest.approx(theirs.cov_re.iloc[0, 0], rel=1e-3)
