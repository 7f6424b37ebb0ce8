"""The longitudinal model of the plan: the primary outcome over baseline and the visit windows.

``value ~ window * target`` (treatment coding: window ``baseline`` and the first target in sort
order are the reference levels) with a random intercept per patient, fitted by REML with
statsmodels ``MixedLM``; with at least the plan's number of released sites, a random intercept
per site as well (patients nested in sites, as a variance component). Estimates carry their
Wald 95 % interval; the result says whether the optimiser converged and lists its warnings.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from fhirfus.analysis.inference import number
from fhirfus.analysis.plan import Plan
from fhirfus.analysis.windows import grouped

BASELINE = "baseline"


def long_frame(patients: pd.DataFrame, windowed: pd.DataFrame, plan: Plan) -> pd.DataFrame:
    """One row per patient and time point (baseline and each window) having the outcome."""
    outcome = plan.model_outcome
    frame = windowed.reindex(patients["pseudonym"]).reset_index(drop=True)
    base = patients.reset_index(drop=True)
    keep = base["target"].notna() & (base["target"] != "*") & base[f"{outcome}_baseline"].notna()
    site = base["site"] if "site" in base else pd.Series(None, index=base.index, dtype="object")
    parts = [pd.DataFrame({"patient": base["pseudonym"], "site": site, "target": base["target"],
                           "window": BASELINE, "value": base[f"{outcome}_baseline"]})[keep]]
    for window in plan.windows:
        parts.append(pd.DataFrame({"patient": base["pseudonym"], "site": site, "target": base["target"],
                                   "window": window.name, "value": frame[f"{window.name}_{outcome}"]})[keep])
    data = pd.concat(parts, ignore_index=True).dropna(subset=["value"])
    return data.astype({"value": "float64"})


def fit_model(data: pd.DataFrame, plan: Plan, site_intercept: bool) -> dict[str, Any]:
    """Fit the model on ``long_frame`` rows; never raises for data it cannot fit (status says why)."""
    import statsmodels.formula.api as smf  # heavy import, paid only by exports that fit the model

    levels = [BASELINE, *[w.name for w in plan.windows]]
    data = data[data["window"].isin(levels)].copy()
    result: dict[str, Any] = {
        "outcome": plan.model_outcome, "formula": "value ~ window * target",
        "random_intercepts": ["site", "patient"] if site_intercept else ["patient"],
        "observations": len(data), "patients": int(data["patient"].nunique()),
        "reference": {"window": BASELINE, "target": None}, "converged": False, "warnings": [],
        "estimates": [],
    }
    targets = sorted(data["target"].unique())
    if len(data) < 3 or data["patient"].nunique() < 2 or data["window"].nunique() < 2:
        result["status"] = "not-fitted: too few observations"
        return result
    result["reference"]["target"] = targets[0]
    present = [w for w in levels if w in set(data["window"])]
    formula = (f"value ~ C(window, Treatment('{BASELINE}'), levels={present!r})"
               + (" * C(target)" if len(targets) > 1 else ""))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if site_intercept:
                model = smf.mixedlm(formula, data, groups=data["site"], re_formula="1",
                                    vc_formula={"patient": "0 + C(patient)"})
            else:
                model = smf.mixedlm(formula, data, groups=data["patient"])
            fitted = model.fit(reml=True)
        except (ValueError, np.linalg.LinAlgError) as exc:
            result["status"] = f"not-fitted: {type(exc).__name__}: {exc}"
            return result
    result["warnings"] = sorted({str(w.message).splitlines()[0] for w in caught})
    result["converged"] = bool(fitted.converged)
    result["status"] = "converged" if fitted.converged else "not-converged"
    interval = fitted.conf_int(alpha=1 - plan.confidence)
    for name in fitted.fe_params.index:
        result["estimates"].append({
            "term": _term(str(name)), "estimate": number(fitted.fe_params[name]),
            "se": number(fitted.bse_fe[name]), "ci_low": number(interval.loc[name, 0]),
            "ci_high": number(interval.loc[name, 1]), "p": number(fitted.pvalues[name]),
        })
    result["variance"] = {"residual": number(fitted.scale),
                          ("site" if site_intercept else "patient"): number(fitted.cov_re.iloc[0, 0])}
    if site_intercept:
        result["variance"]["patient"] = number(fitted.vcomp[0]) if len(fitted.vcomp) else None
    return result


def _term(name: str) -> str:
    """statsmodels' parameter name in plain words: ``window[m3]:target[vo-complex]``."""
    out = name.replace("Intercept", "intercept")
    if "C(window" in out:
        head, _, rest = out.partition("[T.")
        level, _, tail = rest.partition("]")
        out = f"window[{level}]{tail}" if head.startswith("C(window") else out
    return out.replace("C(target)[T.", "target[")


def longitudinal_model(patients: pd.DataFrame, windowed: pd.DataFrame, plan: Plan) -> dict[str, Any]:
    data = long_frame(patients, windowed, plan)
    sites = grouped(patients, "site")
    return fit_model(data, plan, site_intercept=len(sites) >= plan.site_random_min_sites)
