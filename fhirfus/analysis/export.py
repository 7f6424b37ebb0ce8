"""The de-identified analysis export of a cohort: views → de-identification → tables, statistics, report.

One call produces, in one directory:
``patients.{csv|parquet}``, ``assessments.{csv|parquet}``, ``dictionary.{csv|parquet}``,
``statistics.json`` and ``report.html`` (domain.md §5 and the analysis plan, ``analysis/plan.py``).
The order of the steps is the privacy argument: the views read coded data only, the policy
de-identifies the view rows, and everything after that (dataset, k-anonymity, statistics,
disclosure control, report) sees de-identified rows only. The key is
checked and the policy is checked against the views before a single resource is read.

``export_analysis`` is the CLI entry point; the API runs ``run_analysis`` in a job
(``fhirfus.analysis.jobs``).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from fhirfus import __version__
from fhirfus.analysis.dataset import build_dataset
from fhirfus.analysis.deid.policy import (
    check_policy,
    checked_key,
    k_anonymize,
    load_policy,
    namespace_for,
    pseudonyms,
)
from fhirfus.analysis.deid.rows import deidentify
from fhirfus.analysis.disclosure import apply_disclosure_control
from fhirfus.analysis.files import (
    FORMATS,
    MEDIA_TYPES,
    dictionary,
    write_json,
    write_table,
)
from fhirfus.analysis.longitudinal import longitudinal_model
from fhirfus.analysis.plan import Plan, load_plan
from fhirfus.analysis.report import render_report
from fhirfus.analysis.source import (
    ALL_PATIENTS,
    Progress,
    read_cohort,
    resolve_cohort,
)
from fhirfus.analysis.stats import cohort_statistics
from fhirfus.analysis.tables import (
    adverse_events,
    completeness,
    site_heterogeneity,
    table_one,
    targets_compared,
    treatment_parameters,
)
from fhirfus.analysis.views import VIEW_DIR, analysis_views
from fhirfus.analysis.windows import window_statistics, window_values
from fhirfus.db.engine import make_engine
from fhirfus.errors import InvalidRequest
from fhirfus.settings import Settings
from fhirfus.store.repository import Store

__all__ = ["ALL_PATIENTS", "AnalysisResult", "OutputFile", "export_analysis", "prepare", "run_analysis"]


@dataclass(frozen=True)
class OutputFile:
    name: str
    kind: str          # patients, assessments, dictionary, statistics, report
    media_type: str
    count: int | None  # rows, for tables


@dataclass
class AnalysisResult:
    directory: Path
    files: list[OutputFile]
    statistics: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    figures: dict[str, float] = field(default_factory=dict)


def output_format(value: str | None) -> str:
    """``csv`` (default) or ``parquet``; also their media types, as Bulk Data clients send them."""
    aliases = {"": "csv", "csv": "csv", "text/csv": "csv", "parquet": "parquet",
               "application/vnd.apache.parquet": "parquet", "application/parquet": "parquet"}
    fmt = aliases.get((value or "").strip().lower())
    if fmt is None:
        raise InvalidRequest(f"Unsupported _outputFormat '{value}': use one of {', '.join(FORMATS)}", "_outputFormat")
    return fmt


def prepare(policy_name: str | None, key: str | None) -> tuple[Any, str]:
    """The checked policy and key (``Settings.deid_key``), or the error that makes an export
    impossible (before any work)."""
    policy = load_policy(policy_name)
    check_policy(policy, [column for view in analysis_views() for column in view.columns])
    return policy, checked_key(key)


def run_analysis(store: Store, group_id: str | None, out_dir: Path, fmt: str = "csv", policy_name: str | None = None,
                 progress: Progress | None = None, *, key: str | None, snapshot: datetime | None = None) -> AnalysisResult:
    """Export the cohort ``group_id`` (``_all`` or None: every patient) into ``out_dir``, with
    pseudonyms in the namespace of ``key``. ``snapshot``: when the data were taken (the job's
    transaction time; now when not given)."""
    snapshot = snapshot or datetime.now(UTC)
    fmt = output_format(fmt)
    policy, key = prepare(policy_name, key)
    views = analysis_views()
    clock = _Clock()
    cohort = resolve_cohort(store, group_id)
    source = read_cohort(store, views, cohort, progress)
    clock.lap("read_and_views")
    if progress:
        progress("pseudonyms", 0, len(source.patients))
    pseudonym_of = pseudonyms(store, namespace_for(key), source.patients, policy)
    clock.lap("pseudonyms")
    deid = deidentify(source, views, policy, pseudonym_of)
    figures = {
        "patients": len(source.patients), "resources_read": source.resources_read,
        "view_rows": source.rows_out, "view_seconds": round(source.view_seconds, 3),
        "view_rows_per_second": round(source.rows_out / source.view_seconds) if source.view_seconds else 0,
        "view_resources_per_second": round(source.resources_viewed / source.view_seconds) if source.view_seconds else 0,
        "read_seconds": round(source.read_seconds, 3), "view_fallbacks": source.fallbacks,
    }
    unresolved = source.unresolved_members
    del source, pseudonym_of  # the identifiable rows end here
    clock.lap("deidentify")
    if progress:
        progress("statistics", 0, 1)
    dataset = build_dataset(deid)
    k_report = _k_anonymity(dataset.patients, policy)
    statistics = cohort_statistics(dataset.patients)
    statistics["cohort"]["unresolved_members"] = unresolved
    plan = load_plan()
    statistics.update(plan_statistics(dataset, plan))
    clock.lap("plan_statistics")
    deidentification = {
        "policy": policy.name, "policy_sha256": policy.sha256, "policy_source": policy.source,
        "k_anonymity": k_report, "blanked_values": dict(sorted(deid.blanked.items())),
    }
    statistics["deidentification"] = deidentification
    apply_disclosure_control(statistics, policy.min_k)
    statistics["provenance"] = provenance(snapshot, plan, policy)
    clock.lap("dataset_and_statistics")
    if progress:
        progress("writing", 0, 5)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {"patients": dataset.patients, "assessments": dataset.assessments}
    files = [
        OutputFile(write_table(frame, out_dir / f"{name}.{fmt}", fmt).name, name, MEDIA_TYPES[fmt], len(frame))
        for name, frame in tables.items()
    ]
    data_dictionary = dictionary(tables, views, policy, deidentification, fmt, statistics["plan"])
    files.append(OutputFile(write_table(data_dictionary, out_dir / f"dictionary.{fmt}", fmt).name, "dictionary",
                            MEDIA_TYPES[fmt], len(data_dictionary)))
    files.append(OutputFile(write_json(statistics, out_dir / "statistics.json").name, "statistics",
                            MEDIA_TYPES["json"], None))
    clock.lap("tables")
    if progress:
        progress("report", 3, 5)
    title = f"TWSTRS outcomes after MRgFUS — {cohort.label}"
    report = render_report(title, statistics, dataset.patients, dataset.assessments, deidentification,
                           statistics["provenance"])
    (out_dir / "report.html").write_text(report, encoding="utf-8")
    files.append(OutputFile("report.html", "report", MEDIA_TYPES["html"], None))
    clock.lap("report")
    if progress:
        progress("done", 5, 5)
    return AnalysisResult(out_dir, files, statistics, clock.laps, figures)


def guide_version() -> str:
    """The guide's version: the package's, with a digest of the analysis views that define the dataset."""
    digest = hashlib.sha256()
    for path in sorted(VIEW_DIR.glob("*.json")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"{__version__} (views sha256 {digest.hexdigest()[:16]})"


def provenance(snapshot: datetime, plan: Plan, policy: Any) -> dict[str, str]:
    """The reproducibility footer: when the data were taken, which code and which plan and policy."""
    return {"snapshot": snapshot.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "server_version": __version__, "ig_version": guide_version(), "plan": plan.name,
            "plan_source": plan.source, "plan_sha256": plan.sha256, "policy": policy.name,
            "policy_sha256": policy.sha256}


def plan_statistics(dataset: Any, plan: Plan) -> dict[str, Any]:
    """Everything the analysis plan asks for beyond the baseline → last summary."""
    patients = dataset.patients
    windowed = window_values(patients, dataset.assessments, plan)
    return {
        "plan": plan.as_dict(),
        "table_one": table_one(patients, plan),
        "adverse_events": adverse_events(patients, dataset.adverse_events),
        "treatment_parameters": treatment_parameters(dataset.sessions),
        "windows": window_statistics(patients, windowed, plan),
        "targets_compared": targets_compared(patients, plan),
        "site_heterogeneity": site_heterogeneity(patients, plan),
        "completeness": completeness(patients, windowed, plan),
        "model": longitudinal_model(patients, windowed, plan),
    }


def _k_anonymity(patients: pd.DataFrame, policy: Any) -> dict[str, Any]:
    """Measure (and, per policy, enforce) k over the released quasi-identifiers of ``patients``."""
    qis = [q for q in policy.quasi_identifiers if q in patients]
    records = patients[qis].astype("object").where(patients[qis].notna(), None).to_dict("records")
    report = k_anonymize(records, policy)
    if qis:
        patients[qis] = pd.DataFrame.from_records(records, columns=qis, index=patients.index)
    return report.as_dict()


class _Clock:
    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.last, 3)
        self.last = now


def export_analysis(settings: Settings, group_id: str | None, out_dir: Path, fmt: str = "csv",
                    policy: str | None = None, progress: Progress | None = None) -> Path:
    """``fhirfus export analysis``: write the analysis files of a cohort into ``out_dir`` and return it.

    ``group_id`` None or ``_all`` exports every patient. ``progress(stage, done, total)`` is
    called as the work advances (stages: reading, pseudonyms, statistics, writing, report, done).
    Raises ``fhirfus.errors.FhirError`` subclasses with a clear message (no key, unknown
    policy or group, bad format).
    """
    engine = make_engine(settings.database_url)
    try:
        run_analysis(Store(engine), group_id, Path(out_dir), fmt, policy, progress, key=settings.deid_key)
    finally:
        engine.dispose()
    return Path(out_dir)
