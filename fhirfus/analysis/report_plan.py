"""report.html, the analysis plan's part: Table 1, adverse events, treatment parameters, windows,
targets, sites (forest plot), completeness, the model, disclosure control and the footer.

Everything is read from statistics.json after disclosure control, so a suppressed cell shows as
"n < k" and never reappears in a table or a plot. Units are written in words.
"""

from __future__ import annotations

import html
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from fhirfus.analysis.dataset import PARAMETERS
from fhirfus.analysis.tables import SEVERITIES

WORDS = {"total": "TWSTRS total (0–85 points)", "severity": "TWSTRS severity (0–35 points)",
         "disability": "TWSTRS disability (0–30 points)", "pain": "TWSTRS pain (0–20 points)"}
PARAMETER_WORDS = {"sonications": "Sonications, count", "max_power_w": "Maximal power, watts",
                   "max_energy_j": "Maximal energy, joules", "max_temperature_c": "Maximal temperature, degrees Celsius",
                   "sdr": "Skull density ratio (no unit)"}
assert set(PARAMETER_WORDS) == set(PARAMETERS.values())


class Cells:
    """Formatting of statistics.json blocks, suppressed ones as "n < k"."""

    def __init__(self, minimum: int) -> None:
        self.small = f"n < {minimum}"

    def hidden(self, block: dict[str, Any] | None) -> bool:
        return block is None or bool(block.get("suppressed"))

    def count(self, block: dict[str, Any] | None) -> str:
        if self.hidden(block):
            return self.small
        assert block is not None
        percent = block.get("percent")
        return str(block["n"]) if percent is None else f"{block['n']} ({percent:.1f} %)"

    def median(self, block: dict[str, Any] | None, digits: int = 1, spread: bool = False) -> str:
        if self.hidden(block):
            return self.small
        assert block is not None
        if block.get("median") is None:
            return "–"
        text = f"{block['median']:.{digits}f} [{block['q1']:.{digits}f}; {block['q3']:.{digits}f}]"
        if spread and block.get("min") is not None:
            text += f" ({block['min']:.{digits}f}–{block['max']:.{digits}f})"
        return text

    def interval(self, block: dict[str, Any] | None, key: str = "mean", digits: int = 1) -> str:
        if self.hidden(block):
            return self.small
        assert block is not None
        if block.get(key) is None:
            return "–"
        low, high = block.get("ci_low"), block.get("ci_high")
        text = f"{block[key]:.{digits}f}"
        return text + (f" ({low:.{digits}f} to {high:.{digits}f})" if low is not None and high is not None else "")


def p_value(value: float | None) -> str:
    if value is None:
        return "–"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def table(head: list[str], rows: list[list[str]], sections: dict[int, str] | None = None) -> str:
    sections = sections or {}
    body = []
    for i, row in enumerate(rows):
        if i in sections:
            body.append(f'<tr class="section"><td colspan="{len(head)}">{html.escape(sections[i])}</td></tr>')
        body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _columns(block: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Overall, per target, and per site where the policy releases sites (``by_site`` is empty else)."""
    return [("Overall", block["overall"]), *block["by_target"].items(),
            *((f"site {site}", group) for site, group in block.get("by_site", {}).items())]


def table_one(statistics: dict[str, Any], cells: Cells) -> str:
    groups = _columns(statistics["table_one"])
    rows: list[list[str]] = [["Patients"] + [str(g["patients"]["n"]) for _, g in groups]]
    sections: dict[int, str] = {}
    for key, title in (("sex", "Sex, n (%)"), ("age_band", "Age at the first session, years, n (%)"),
                       ("cd_subtype", "Cervical-dystonia subtype, n (%)")):
        labels = sorted({label for _, g in groups for label in g.get(key, {})})
        if labels:
            sections[len(rows)] = title
        rows += [[label] + [cells.count(g.get(key, {}).get(label)) if label in g.get(key, {}) else "0"
                            for _, g in groups] for label in labels]
    sections[len(rows)] = "Baseline TWSTRS, points, median [Q1; Q3]"
    rows += [[WORDS[o]] + [cells.median(g["baseline"][o]) for _, g in groups] for o in groups[0][1]["baseline"]]
    sections[len(rows)] = "Treatment and follow-up, median [Q1; Q3] (range)"
    rows.append(["Sessions per treated patient"] + [cells.median(g["sessions"], 0, True) for _, g in groups])
    rows.append(["Follow-up, months"] + [cells.median(g["follow_up_months"], 1, True) for _, g in groups])
    return table(["", *[name for name, _ in groups]], rows, sections)


def adverse_event_table(statistics: dict[str, Any], cells: Cells) -> str:
    block = statistics["adverse_events"]["overall"]
    head = ["Event", "Patients with ≥ 1, n (%)", "Events", *[s.replace("-", " ").capitalize() for s in SEVERITIES],
            "Resolved"]
    rows = []
    for name, row in [("Any adverse event", block["any"]), *block["by_term"].items()]:
        rows.append([name, cells.count(row["patients"]), cells.count(row["events"]),
                     *[cells.count(row["by_severity"][s]) for s in SEVERITIES], cells.count(row["resolved"])])
    groups = _columns(statistics["adverse_events"])
    per_group = [[label] + [cells.count(g["any"][key]) for _, g in groups]
                 for key, label in (("patients", "Patients with ≥ 1, n (%)"), ("events", "Events"),
                                    ("resolved", "Resolved"))]
    return table(head, rows) + table(["Any adverse event", *[name for name, _ in groups]], per_group)


def treatment_table(statistics: dict[str, Any], cells: Cells) -> str:
    groups = _columns(statistics["treatment_parameters"])
    rows = [["Sessions"] + [cells.count(g["sessions"]) for _, g in groups]]
    rows += [[PARAMETER_WORDS[c]] + [cells.median(g[c], 2 if c == "sdr" else 0, True) for _, g in groups]
             for c in PARAMETER_WORDS]
    return table(["Per session, median [Q1; Q3] (range)", *[name for name, _ in groups]], rows)


def window_table(block: dict[str, Any], labels: dict[str, str], outcomes: list[str], cells: Cells) -> str:
    head = ["Window", "n", "Median [Q1; Q3], points", "Mean change (95 % CI)", "Median change, Hodges–Lehmann (95 % CI)",
            "Paired t, p", "Wilcoxon, p"]
    rows: list[list[str]] = []
    sections: dict[int, str] = {}
    for outcome in outcomes:
        sections[len(rows)] = WORDS[outcome]
        for window, label in labels.items():
            cell = block[window][outcome]
            change = cell["change"]
            rows.append([label, cells.count({"n": cell["n"], "suppressed": cell.get("suppressed")}),
                         cells.median(cell["value"]) if not cell.get("suppressed") else cells.small,
                         cells.interval(change["mean"]) if not cells.hidden(change) else cells.small,
                         cells.interval(change["hodges_lehmann"], "estimate") if not cells.hidden(change) else cells.small,
                         p_value(change["paired_t"]["p"]), p_value(change["wilcoxon"]["p"])])
    return table(head, rows, sections)


def targets_table(statistics: dict[str, Any], cells: Cells) -> str:
    block = statistics["targets_compared"]
    rows = [[t, cells.median(g, 1, True)] for t, g in block["groups"].items()]
    first = table(["Target", "Improvement of the TWSTRS total, percent, median [Q1; Q3] (range)"], rows)
    kw = block["kruskal_wallis"]
    pairs = [[f"{p['a']} vs {p['b']}", p_value(p["p"]), p_value(p.get("p_holm"))] for p in block["pairwise_mann_whitney"]]
    statistic = "–" if kw["statistic"] is None else f"{kw['statistic']:.2f}"
    return (first + f"<p>Kruskal–Wallis: H = {statistic}, "
            f"p = {p_value(kw['p'])}.</p>" + table(["Pair (Mann–Whitney U)", "p", "p, Holm-adjusted"], pairs))


def completeness_table(statistics: dict[str, Any], labels: dict[str, str], cells: Cells) -> str:
    block = statistics["completeness"]
    names = {"registered": "Registered", "treated": "Treated (≥ 1 MRgFUS session)",
             "with-baseline": "With a baseline TWSTRS total"}
    names |= {f"in-window-{w}": f"… with a TWSTRS total at {label}" for w, label in labels.items()}
    flow = table(["Step", "Patients"], [[names.get(s["step"], s["step"]), cells.count(s)] for s in block["flow"]])
    rows = []
    for window, label in labels.items():
        cc, aa = block["complete_case"][window], block["all_available"][window]
        rows.append([label, cells.count(cc), cells.interval(cc["mean"]) if not cells.hidden(cc) else cells.small,
                     cells.count(aa), cells.interval(aa["mean"]) if not cells.hidden(aa) else cells.small])
    compared = table(["Window", "Complete case, n", "Mean change (95 % CI)", "All available, n",
                      "Mean change (95 % CI)"], rows)
    return flow + compared


def model_table(statistics: dict[str, Any]) -> str:
    model = statistics["model"]
    rows = [[e["term"], f"{e['estimate']:.2f}" if e["estimate"] is not None else "–",
             f"{e['ci_low']:.2f} to {e['ci_high']:.2f}" if e["ci_low"] is not None else "–", p_value(e["p"])]
            for e in model["estimates"]]
    note = (f"<p class='note'>{html.escape(model['formula'])}, random intercept per "
            f"{html.escape(' and per '.join(model['random_intercepts']))}; reference: window "
            f"{html.escape(str(model['reference']['window']))}, target {html.escape(str(model['reference']['target']))}; "
            f"{model['observations']} observations of {model['patients']} patients. Status: "
            f"<strong>{html.escape(model['status'])}</strong>"
            + (f" (notes: {html.escape('; '.join(model['warnings']))})" if model["warnings"] else "") + ".</p>")
    return note + table(["Term", "Estimate, points", "95 % CI", "p"], rows)


def forest_plot(statistics: dict[str, Any], png: Any, cells: Cells) -> tuple[str, list[str]]:
    """Mean improvement % with its 95 % CI per site and overall; suppressed sites are left out."""
    block = statistics["site_heterogeneity"]
    shown = [(s, b) for s, b in block["by_site"].items() if not cells.hidden(b) and b.get("ci_low") is not None]
    left_out = [s for s in block["by_site"] if s not in dict(shown)]
    rows = [*shown, ("Overall", block["overall"])]
    figure, ax = plt.subplots(figsize=(6, 0.45 * len(rows) + 1.2))
    for y, (name, b) in enumerate(reversed(rows)):
        if b.get("mean") is None or b.get("ci_low") is None:
            continue
        overall = name == "Overall"
        ax.plot([b["ci_low"], b["ci_high"]], [y, y], color="#222", lw=1.5)
        ax.plot([b["mean"]], [y], marker="D" if overall else "s", color="#d1495b" if overall else "#1b6ca8", ms=7)
    ax.set_yticks(range(len(rows)), [f"{n} (n = {b['n']})" for n, b in reversed(rows)], fontsize=8)
    if block["overall"].get("mean") is not None:
        ax.axvline(block["overall"]["mean"], color="#d1495b", lw=0.8, ls="--")
    ax.set_xlabel("Improvement of the TWSTRS total, percent (mean, 95 % CI)")
    ax.set_title("Improvement by site", fontsize=10)
    figure.subplots_adjust(left=0.3)
    return png(figure), left_out


def window_plot(statistics: dict[str, Any], labels: dict[str, str], png: Any, cells: Cells) -> str:
    """Mean change of the TWSTRS total from baseline with its 95 % CI per window, overall and per target."""
    groups = [("Overall", statistics["windows"]["overall"]), *statistics["windows"]["by_target"].items()]
    figure, ax = plt.subplots(figsize=(7, 4.5))
    colours = ["#222", "#1b6ca8", "#d1495b", "#2e933c", "#edae49", "#66409e"]
    width = 0.6 / max(1, len(groups))
    for g, (name, block) in enumerate(groups):
        for x, window in enumerate(labels):
            change = block[window]["total"]["change"]
            mean = change["mean"]
            if cells.hidden(change) or mean.get("ci_low") is None:
                continue
            pos = x - 0.3 + width * (g + 0.5)
            ax.errorbar([pos], [mean["mean"]], yerr=[[mean["mean"] - mean["ci_low"]], [mean["ci_high"] - mean["mean"]]],
                        fmt="o", color=colours[g % len(colours)], capsize=3, label=name if x == 0 else None)
    ax.axhline(0, color="#444", lw=0.8, ls="--")
    ax.set_xticks(range(len(labels)), list(labels.values()))
    ax.set_ylabel("Change of the TWSTRS total from baseline, points")
    ax.set_title("Change from baseline by window (mean, 95 % CI)", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, frameon=False)
    return png(figure)


def trajectory_summary(statistics: dict[str, Any], labels: dict[str, str], days: dict[str, int],
                       cells: Cells) -> list[tuple[float, float | None, float | None, float | None, str]]:
    """(month, median, Q1, Q3, n label) at baseline and each window, from the released statistics."""
    baseline = statistics["table_one"]["overall"]["baseline"]["total"]
    points = [(0.0, baseline, "baseline")]
    points += [(days[w] / 30.4375, statistics["windows"]["overall"][w]["total"]["value"], w) for w in labels]
    out: list[tuple[float, float | None, float | None, float | None, str]] = []
    for month, block, _name in points:
        if cells.hidden(block) or block.get("median") is None:
            out.append((month, None, None, None, cells.small))
        else:
            out.append((month, block["median"], block["q1"], block["q3"], f"n = {block['n']}"))
    return out


def draw_trajectory_summary(ax: Any, summary: list[tuple[float, float | None, float | None, float | None, str]]) -> None:
    shown = [(m, med, q1, q3) for m, med, q1, q3, _ in summary if med is not None]
    if shown:
        months, medians, q1s, q3s = (np.array(v, dtype=float) for v in zip(*shown, strict=True))
        ax.errorbar(months, medians, yerr=[medians - q1s, q3s - medians], color="#222", lw=2.5, capsize=4,
                    marker="o", label="median [Q1; Q3] at baseline and per window")
    for month, _, _, _, label in summary:
        ax.annotate(label, (month, 0), xytext=(0, -28), textcoords="offset points", ha="center", fontsize=7,
                    annotation_clip=False)


def disclosure_section(statistics: dict[str, Any]) -> str:
    """Where cells were suppressed, by table and group (the cells themselves: statistics.json)."""
    block = statistics["disclosure"]
    if block["suppressed_cells"] == 0:
        return (f"<p>Cells with fewer than {block['min_cell']} patients or events are suppressed; none had to be "
                "under this policy.</p>")
    places: dict[str, int] = {}
    for path in block["suppressed"]:
        parts = path.split(".")
        place = ".".join(parts[:3] if len(parts) > 2 and parts[1].startswith("by_") else parts[:2])
        places[place] = places.get(place, 0) + 1
    return (f"<p>Cells with fewer than {block['min_cell']} patients or events are suppressed (shown as "
            f"“n &lt; {block['min_cell']}”, <code>null</code> in statistics.json, left out of the plots): "
            f"{block['suppressed_cells']} cells, in these tables and groups (each cell's path: statistics.json, "
            "<code>disclosure.suppressed</code>):</p><ul class='note'>"
            + "".join(f"<li><code>{html.escape(p)}</code>: {n}</li>" for p, n in places.items()) + "</ul>")


def footer(provenance: dict[str, Any]) -> str:
    return ("<footer class='note'><h2>Reproducibility</h2><p>"
            f"Data snapshot: {html.escape(provenance['snapshot'])}. Server: fhirfus {html.escape(provenance['server_version'])}; "
            f"implementation guide {html.escape(provenance['ig_version'])}. Analysis plan "
            f"<code>{html.escape(provenance['plan'])}</code> (<code>{html.escape(provenance['plan_source'])}</code>), sha256 "
            f"<code>{html.escape(provenance['plan_sha256'])}</code>. De-identification policy "
            f"<code>{html.escape(provenance['policy'])}</code>, sha256 <code>{html.escape(provenance['policy_sha256'])}</code>."
            "</p></footer>")
