"""report.html: the paper-style summary table, overall and per target, and three plots.

Self-contained (inline CSS, plots as PNG data URIs, no script, nothing fetched), so it can be
mailed or archived as one file. Built from the de-identified tables and statistics only (after
disclosure control: a suppressed cell stays suppressed in every table and plot); the only calendar
date it carries is the data snapshot time in the reproducibility footer, and the PNGs carry no
metadata. The analysis plan's tables and plots are in ``report_plan``.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection

from fhirfus.analysis import report_plan as plan_part
from fhirfus.analysis.dataset import SCORES
from fhirfus.analysis.stats import DAYS_PER_MONTH

COLOURS = ["#1b6ca8", "#d1495b", "#2e933c", "#edae49", "#66409e", "#00798c"]
MAX_POINTS = 3000  # scatter points per plot; lines are drawn for everyone
LABELS = {"total": "Total (0–85)", "severity": "Severity (0–35)", "disability": "Disability (0–30)",
          "pain": "Pain (0–20)"}

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:70rem;color:#222}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem}table{border-collapse:collapse;margin:1rem 0}
th,td{border-bottom:1px solid #ddd;padding:.3rem .7rem;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}thead th{border-bottom:2px solid #444}
tr.section td{font-weight:600;background:#f4f4f4;text-align:left}.note{color:#555;font-size:.9rem}
figure{margin:1rem 0}img{max-width:100%}code{font-size:.85rem}
"""


def _f(value: Any, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _p(value: float | None) -> str:
    if value is None:
        return "–"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _median(block: dict[str, Any]) -> str:
    return "–" if block.get("median") is None else f"{_f(block['median'])} [{_f(block['q1'])}; {_f(block['q3'])}]"


def _mean(block: dict[str, Any]) -> str:
    return "–" if block.get("mean") is None else f"{_f(block['mean'])} ± {_f(block.get('sd'))}"


def _rows(group: dict[str, Any]) -> list[tuple[str, str]]:
    cohort = group.get("cohort") or {"patients": group["patients"], "excluded": group["excluded"]}
    rows = [
        ("Patients, n (excluded)", f"{cohort['patients']} ({cohort['excluded']})"),
        ("Sessions per patient, median [Q1; Q3]", _median(group["sessions_per_patient"])),
        ("Follow-up, months, mean ± SD", _mean(group["follow_up_months"])),
    ]
    for score in SCORES:
        block = group["scores"][score]
        rows += [
            (f"§{LABELS[score]}", ""),
            ("Patients with baseline and last, n", str(block["baseline"]["n"])),
            ("Baseline, median [Q1; Q3]", _median(block["baseline"])),
            ("Last follow-up, median [Q1; Q3]", _median(block["last"])),
            ("Baseline, mean ± SD", _mean(block["baseline"])),
            ("Last follow-up, mean ± SD", _mean(block["last"])),
            ("Improvement %, median [Q1; Q3]", _median(block["improvement_percent"])),
            ("Paired t-test, t (p)", f"{_f(block['paired_t']['statistic'], 2)} ({_p(block['paired_t']['p'])})"),
            ("Wilcoxon signed-rank, W (p)", f"{_f(block['wilcoxon']['statistic'], 1)} ({_p(block['wilcoxon']['p'])})"),
        ]
    return rows


def _withheld(group: dict[str, Any], small: str) -> list[tuple[str, str]]:
    """A group's rows with every suppressed figure shown as ``small`` (disclosure control)."""
    rows = _rows(group)
    if group.get("suppressed"):
        return [(label, "" if label.startswith("§") else small) for label, _ in rows]
    return [(label, small if value == "None" else value.replace("(None)", f"({small})")) for label, value in rows]


def summary_table(statistics: dict[str, Any]) -> str:
    groups = [("Overall", statistics)] + [(t, g) for t, g in statistics["by_target"].items()]
    small = f"n < {statistics.get('disclosure', {}).get('min_cell', 1)}"
    columns = [_withheld(g, small) for _, g in groups]
    head = "".join(f"<th>{html.escape(name)}</th>" for name, _ in groups)
    body = []
    for i, (label, _) in enumerate(columns[0]):
        if label.startswith("§"):
            body.append(f'<tr class="section"><td colspan="{len(groups) + 1}">TWSTRS {html.escape(label[1:])}</td></tr>')
            continue
        cells = "".join(f"<td>{html.escape(col[i][1])}</td>" for col in columns)
        body.append(f"<tr><td>{html.escape(label)}</td>{cells}</tr>")
    return f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _png(figure: plt.Figure, bottom: float = 0.14, left: float | None = None) -> str:
    buffer = io.BytesIO()
    figure.subplots_adjust(left=left or max(0.13, figure.subplotpars.left), right=0.97, top=0.92, bottom=bottom)
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _colours(patients: pd.DataFrame, minimum: int = 1) -> dict[str, str]:
    """A colour per target with at least ``minimum`` patients; the lines of smaller groups stay
    grey and unnamed (disclosure control)."""
    counts = patients["target"].value_counts()
    targets = sorted(t for t, n in counts.items() if n >= minimum)
    return {t: COLOURS[i % len(COLOURS)] for i, t in enumerate(targets)}


def _legend(ax: plt.Axes, colours: dict[str, str]) -> None:
    handles = [plt.Line2D([], [], color=c, lw=2, label=t) for t, c in colours.items()]
    if handles:
        ax.legend(handles=handles, fontsize=8, frameon=False)


def paired_plot(patients: pd.DataFrame, minimum: int = 1) -> str:
    """Baseline → last total score, one line per included patient, coloured by target."""
    data = patients[patients["included"]]
    colours = _colours(patients, minimum)
    figure, ax = plt.subplots(figsize=(5, 4.5))
    segments = [[(0, b), (1, last)] for b, last in zip(data["total_baseline"], data["total_last"], strict=True)]
    line_colours = [colours.get(t, "#888") for t in data["target"]]
    ax.add_collection(LineCollection(segments, colors=line_colours, linewidths=0.8, alpha=0.5 if len(data) < 200 else 0.08))
    for x, column in ((0, "total_baseline"), (1, "total_last")):
        if len(data):
            ax.plot([x - 0.08, x + 0.08], [data[column].median()] * 2, color="#222", lw=3)
    ax.set_xlim(-0.3, 1.3)
    ax.set_ylim(0, 85)
    ax.set_xticks([0, 1], ["Baseline", "Last follow-up"])
    ax.set_ylabel("TWSTRS total")
    ax.set_title("Paired baseline → last (black: median)", fontsize=10)
    _legend(ax, colours)
    return _png(figure)


def trajectory_plot(patients: pd.DataFrame, assessments: pd.DataFrame,
                    summary: list[tuple[float, float | None, float | None, float | None, str]] | None = None,
                    minimum: int = 1) -> str:
    """TWSTRS total over months since the first session, one line per patient; the median [Q1; Q3]
    at baseline and per window on top, with each point's n (or its suppression) under the axis."""
    colours = _colours(patients, minimum)
    target_of = dict(zip(patients["pseudonym"], patients["target"], strict=True))
    data = assessments.dropna(subset=["total", "day"]).astype({"day": "float64"})
    data = data[data["phase"].notna()]
    figure, ax = plt.subplots(figsize=(7, 4.5))
    data = data.sort_values(["pseudonym", "day"], kind="stable")
    names = data["pseudonym"].to_numpy()
    points = np.column_stack([data["day"].to_numpy() / DAYS_PER_MONTH, data["total"].to_numpy(dtype=float)])
    starts = np.flatnonzero(np.r_[True, names[1:] != names[:-1]]) if len(names) else np.array([], dtype=int)
    segments = np.split(points, starts[1:]) if len(names) else []
    line_colours = [colours.get(str(target_of.get(names[i])), "#888") for i in starts]
    ax.add_collection(LineCollection(segments, colors=line_colours, linewidths=0.8,
                                     alpha=0.6 if len(segments) < 200 else 0.06))
    if summary:
        plan_part.draw_trajectory_summary(ax, summary)
    if len(data):
        ax.set_xlim(min(-1.0, data["day"].min() / DAYS_PER_MONTH - 0.5), data["day"].max() / DAYS_PER_MONTH + 0.5)
    ax.set_ylim(0, 85)
    ax.axvline(0, color="#444", lw=0.8, ls="--")
    ax.set_xlabel("Months since first MRgFUS session", labelpad=22)
    ax.set_ylabel("TWSTRS total, points")
    ax.set_title("Score trajectories (black: median [Q1; Q3] at baseline and per window)", fontsize=10)
    _legend(ax, colours)
    figure.subplots_adjust(bottom=0.2)
    return _png(figure, bottom=0.2)


def improvement_plot(patients: pd.DataFrame, minimum: int = 1) -> str:
    """Improvement % of the total score by target: box plot with the patients as points (targets
    with fewer than ``minimum`` patients are left out: disclosure control)."""
    data = patients[patients["included"]].dropna(subset=["total_improvement_percent", "target"])
    colours = _colours(patients, minimum)
    targets = [t for t in colours if (data["target"] == t).sum() >= minimum]
    figure, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(targets) + 2), 4.5))
    groups = [data.loc[data["target"] == t, "total_improvement_percent"].to_numpy() for t in targets]
    if targets:
        ax.boxplot(groups, showfliers=False, widths=0.5)
        rng = np.random.default_rng(0)
        for i, (target, values) in enumerate(zip(targets, groups, strict=True), start=1):
            shown = values if len(values) <= MAX_POINTS else rng.choice(values, MAX_POINTS, replace=False)
            ax.scatter(i + rng.uniform(-0.12, 0.12, len(shown)), shown, s=10, color=colours[target],
                       alpha=0.8 if len(shown) < 200 else 0.15)
        ax.set_xticks(range(1, len(targets) + 1), targets, fontsize=8)
    ax.axhline(0, color="#444", lw=0.8, ls="--")
    ax.set_ylabel("Improvement of the TWSTRS total, percent")
    ax.set_title("Improvement by target", fontsize=10)
    return _png(figure)


def _figure(caption: str, src: str, note: str = "") -> str:
    text = f"<h2>{html.escape(caption)}</h2><figure><img alt='{html.escape(caption)}' src='{src}'></figure>"
    return text + (f"<p class='note'>{html.escape(note)}</p>" if note else "")


def render_report(title: str, statistics: dict[str, Any], patients: pd.DataFrame, assessments: pd.DataFrame,
                  deidentification: dict[str, Any], provenance: dict[str, Any] | None = None) -> str:
    k = deidentification["k_anonymity"]
    minimum = statistics.get("disclosure", {}).get("min_cell", 1)
    cells = plan_part.Cells(minimum)
    plan = statistics.get("plan")
    labels = {w["name"]: w["label"] for w in plan["windows"]} if plan else {}
    days = {w["name"]: w["nominal_day"] for w in plan["windows"]} if plan else {}
    summary = plan_part.trajectory_summary(statistics, labels, days, cells) if plan else None
    figures = [
        ("Paired baseline → last follow-up, TWSTRS total", paired_plot(patients, minimum)),
        ("TWSTRS total over time", trajectory_plot(patients, assessments, summary, minimum)),
        ("Improvement of the TWSTRS total by target", improvement_plot(patients, minimum)),
    ]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p class='note'>Baseline: last TWSTRS assessment on or before the first MRgFUS session; last: latest "
        "assessment after it. Median [Q1; Q3] with linear-interpolation quartiles, mean ± SD (sample SD). "
        "Improvement % = 100 × (baseline − last) / baseline per patient. Patients without a session or without "
        "both total scores are counted as excluded. Definitions: statistics.json, dictionary.</p>",
        "<h2>Summary, overall and per target</h2>", summary_table(statistics),
        *[_figure(caption, src) for caption, src in figures],
        *(_plan_sections(statistics, labels, cells) if plan else []),
        "<h2>De-identification</h2>",
        f"<p>Policy <code>{html.escape(deidentification['policy'])}</code>, sha256 "
        f"<code>{html.escape(deidentification['policy_sha256'])}</code>. Smallest equivalence class over "
        f"{html.escape(', '.join(k['quasi_identifiers']) or 'no quasi-identifier')}: k = {k['k']} "
        f"(before suppression {k['k_before_suppression']}; policy minimum {k['min_k']}).</p>",
        *(["<h2>Disclosure control</h2>", plan_part.disclosure_section(statistics)] if "disclosure" in statistics else []),
        plan_part.footer(provenance) if provenance else "",
        "</body></html>",
    ]
    return "".join(parts)


def _plan_sections(statistics: dict[str, Any], labels: dict[str, str], cells: plan_part.Cells) -> list[str]:
    """The tables and plots the analysis plan adds, in the order of a paper."""
    outcomes = list(statistics["plan"]["outcomes"])
    forest, left_out = plan_part.forest_plot(statistics, _png, cells)
    windows = statistics["windows"]
    parts = [
        "<h2>Table 1: patients at baseline</h2>", plan_part.table_one(statistics, cells),
        "<h2>Adverse events</h2>", plan_part.adverse_event_table(statistics, cells),
        "<h2>Treatment parameters per session, by target</h2>", plan_part.treatment_table(statistics, cells),
        "<h2>Outcomes by visit window (all patients)</h2>",
        "<p class='note'>Windows in days after the first session: "
        + html.escape("; ".join(f"{w['label']}: days {w['from_day']}–{w['to_day']}, nearest to day {w['nominal_day']}"
                                for w in statistics["plan"]["windows"]))
        + ". Change = value in the window − baseline, in points (negative: better).</p>",
        plan_part.window_table(windows["overall"], labels, outcomes, cells),
        _figure("Change of the TWSTRS total by window", plan_part.window_plot(statistics, labels, _png, cells)),
    ]
    for target, block in windows["by_target"].items():
        parts += [f"<h2>Outcomes by visit window, target {html.escape(target)}</h2>",
                  plan_part.window_table(block, labels, outcomes[:1], cells)]
    for site, block in windows["by_site"].items():
        parts += [f"<h2>Outcomes by visit window, site {html.escape(site)}</h2>",
                  plan_part.window_table(block, labels, outcomes[:1], cells)]
    parts += ["<h2>Targets compared</h2>", plan_part.targets_table(statistics, cells)]
    if statistics["site_heterogeneity"]["by_site"]:
        note = f"Left out (fewer than {statistics['disclosure']['min_cell']} patients): {', '.join(left_out)}." \
            if left_out else ""
        parts.append(_figure("Site heterogeneity: improvement by site (forest plot)", forest, note))
    else:
        parts.append("<h2>Site heterogeneity</h2><p>Sites are not released under this policy.</p>")
    parts += ["<h2>Completeness of follow-up</h2>", plan_part.completeness_table(statistics, labels, cells),
              "<h2>Longitudinal model of the TWSTRS total</h2>", plan_part.model_table(statistics)]
    return parts
