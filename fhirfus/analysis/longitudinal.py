"""The longitudinal model of the plan: the primary outcome over baseline and the visit windows.

A linear mixed model ``value ~ window * target`` (treatment coding: window ``baseline`` and the
first target in sort order are the references) with a random intercept per patient and, with at
least the plan's number of released sites, a random intercept per site (patients nested in
sites), fitted by REML — the model statsmodels ``MixedLM`` fits (the tests compare the two).

It is fitted here from per-patient sums rather than by ``MixedLM``, whose per-group Python loop
takes most of the export's time budget for a 10,000-patient cohort (and far more with the site
level): with V = σ²·H, H = I + γₚ·ZZ' (+ γₛ·site blocks), Woodbury and Sherman–Morrison give
X'H⁻¹X, X'H⁻¹y, y'H⁻¹y and log|H| from each patient's count and column sums, so the profiled
REML criterion (N − p)·log(r'H⁻¹r) + log|H| + log|X'H⁻¹X| is minimised over log γ by L-BFGS-B.
Estimates carry Wald intervals from σ̂²·(X'H⁻¹X)⁻¹ and the normal quantile; the result says
whether the optimiser converged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as scipy_stats

from fhirfus.analysis.inference import number
from fhirfus.analysis.plan import Plan
from fhirfus.analysis.windows import grouped

BASELINE = "baseline"
LOG_GAMMA_BOUNDS = (-18.0, 12.0)  # variance ratios from ~1e-8 (a component at zero) to ~1e5


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


def design(data: pd.DataFrame, windows: list[str], targets: list[str]) -> tuple[np.ndarray, list[str]]:
    """The fixed-effect design: intercept, windows, targets, window × target (cells with data only)."""
    columns: dict[str, np.ndarray] = {"intercept": np.ones(len(data))}
    window = data["window"].to_numpy()
    target = data["target"].to_numpy()
    for w in windows[1:]:
        columns[f"window[{w}]"] = (window == w).astype(float)
    for t in targets[1:]:
        columns[f"target[{t}]"] = (target == t).astype(float)
    for t in targets[1:]:
        for w in windows[1:]:
            columns[f"window[{w}]:target[{t}]"] = ((window == w) & (target == t)).astype(float)
    names = [name for name, values in columns.items() if values.any()]
    return np.column_stack([columns[n] for n in names]), names


class _Reml:
    """The profiled REML criterion of the random-intercept model, from per-patient sums."""

    def __init__(self, x: np.ndarray, y: np.ndarray, patient: np.ndarray, site_of_patient: np.ndarray | None):
        w = np.column_stack([x, y])
        self.p, self.n_obs = x.shape[1], len(y)
        self.wtw = w.T @ w
        patients = int(patient.max()) + 1
        self.counts = np.bincount(patient, minlength=patients).astype(float)
        self.sums = np.zeros((patients, w.shape[1]))
        np.add.at(self.sums, patient, w)
        self.site_of_patient = site_of_patient
        if site_of_patient is not None:
            self.sites = int(site_of_patient.max()) + 1
            self.site_indicator = np.zeros((self.sites, patients))
            self.site_indicator[site_of_patient, np.arange(patients)] = 1.0

    def parts(self, log_gamma: np.ndarray) -> tuple[np.ndarray, float]:
        """W'H⁻¹W (W = [X y]) and log|H|."""
        gp = float(np.exp(log_gamma[0]))
        shrink = 1.0 / (1.0 + self.counts * gp)
        weighted = self.sums * (gp * shrink)[:, None]
        m = self.wtw - weighted.T @ self.sums
        logdet = float(np.log1p(self.counts * gp).sum())
        if self.site_of_patient is not None:
            gs = float(np.exp(log_gamma[1]))
            u = self.site_indicator @ (self.sums * shrink[:, None])
            mass = self.site_indicator @ (self.counts * shrink)
            m = m - (u * (gs / (1.0 + gs * mass))[:, None]).T @ u
            logdet += float(np.log1p(gs * mass).sum())
        return m, logdet

    def solve(self, log_gamma: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, float]:
        """criterion, β̂, (X'H⁻¹X)⁻¹, σ̂²."""
        m, logdet = self.parts(log_gamma)
        xhx, xhy, yhy = m[: self.p, : self.p], m[: self.p, self.p], m[self.p, self.p]
        chol = np.linalg.cholesky(xhx)
        beta = np.linalg.solve(xhx, xhy)
        rss = max(float(yhy - xhy @ beta), 1e-300)
        dof = self.n_obs - self.p
        criterion = 0.5 * (dof * np.log(rss) + logdet + 2.0 * float(np.log(np.diag(chol)).sum()))
        return criterion, beta, np.linalg.inv(xhx), rss / dof


def fit_model(data: pd.DataFrame, plan: Plan, site_intercept: bool) -> dict[str, Any]:
    """Fit the model on ``long_frame`` rows; never raises for data it cannot fit (status says why)."""
    levels = [BASELINE, *[w.name for w in plan.windows]]
    data = data[data["window"].isin(levels)].reset_index(drop=True)
    result: dict[str, Any] = {
        "outcome": plan.model_outcome, "formula": "value ~ window * target", "method": "REML",
        "random_intercepts": ["site", "patient"] if site_intercept else ["patient"],
        "observations": len(data), "patients": int(data["patient"].nunique()),
        "reference": {"window": BASELINE, "target": None}, "converged": False, "warnings": [], "estimates": [],
    }
    windows = [w for w in levels if w in set(data["window"])]
    targets = sorted(data["target"].unique())
    if len(windows) < 2 or data["patient"].nunique() < 3:
        result["status"] = "not-fitted: too few observations"
        return result
    result["reference"]["target"] = targets[0]
    x, names = design(data, windows, targets)
    if np.linalg.matrix_rank(x) < x.shape[1] or len(data) <= x.shape[1] + 1:
        result["status"] = "not-fitted: the design is not of full rank"
        return result
    patient_codes, patient_names = pd.factorize(data["patient"], sort=True)
    site_of_patient = None
    if site_intercept:
        first_site = data.groupby("patient")["site"].first().reindex(patient_names)
        site_of_patient = pd.factorize(first_site, sort=True)[0]
    reml = _Reml(x, data["value"].to_numpy(dtype=float), patient_codes, site_of_patient)
    start = np.zeros(2 if site_intercept else 1)
    try:
        found = optimize.minimize(lambda g: reml.solve(g)[0], start, method="L-BFGS-B",
                                  bounds=[LOG_GAMMA_BOUNDS] * len(start))
        _, beta, inverse, scale = reml.solve(found.x)
    except np.linalg.LinAlgError as exc:
        result["status"] = f"not-fitted: {exc}"
        return result
    result["converged"] = bool(found.success)
    result["status"] = "converged" if found.success else "not-converged"
    if not found.success:
        result["warnings"].append(str(found.message))
    at_bound = [name for name, g in zip(result["random_intercepts"][::-1], found.x, strict=False)
                if g <= LOG_GAMMA_BOUNDS[0] + 1e-6]
    result["warnings"] += [f"the {name} variance is estimated at zero" for name in at_bound]
    z = scipy_stats.norm.ppf(0.5 + plan.confidence / 2)
    se = np.sqrt(np.diag(inverse) * scale)
    for name, estimate, error in zip(names, beta, se, strict=True):
        result["estimates"].append({
            "term": name, "estimate": number(estimate), "se": number(error),
            "ci_low": number(estimate - z * error), "ci_high": number(estimate + z * error),
            "p": number(2 * scipy_stats.norm.sf(abs(estimate / error))) if error > 0 else None,
        })
    result["variance"] = {"residual": number(scale), "patient": number(np.exp(found.x[0]) * scale)}
    if site_intercept:
        result["variance"]["site"] = number(np.exp(found.x[1]) * scale)
    return result


def longitudinal_model(patients: pd.DataFrame, windowed: pd.DataFrame, plan: Plan) -> dict[str, Any]:
    data = long_frame(patients, windowed, plan)
    sites = grouped(patients, "site")
    return fit_model(data, plan, site_intercept=len(sites) >= plan.site_random_min_sites)
