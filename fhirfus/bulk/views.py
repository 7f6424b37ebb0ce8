"""``$viewdefinition-export`` (SQL on FHIR v2): ViewDefinitions run into files, asynchronously.

A job of level ``view`` in the Bulk Data job table, run by the same worker (``bulk.worker``): it
survives a restart, the status URL answers 202 with ``X-Progress`` while it runs, its files answer
only the client that asked (or an admin), DELETE cancels. Each ``view`` parameter (``viewReference``,
``viewCanonical`` or ``viewResource``, with an optional ``name``) gives one file, ``{name}.{format}``.
The output is confined as ``$viewdefinition-run`` is: a site client's rows of its site, an analyst's
through its de-identification policy (checked at kick-off, applied again by the job), an admin's
everything. The completion answer is the operation's ``Parameters`` (``exportId``, ``status``,
``location``, ``output`` per view with ``name`` and ``location``).

The job row keeps the views and options as given (a guide view as the guide had it at kick-off, a
group as its members then), so a job rerun by another process exports what was asked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fhirfus.auth.access import Access
from fhirfus.auth.scopes import Grant
from fhirfus.bulk import jobs
from fhirfus.bulk.params import ExportRequest
from fhirfus.bulk.run import Checkpoint, ExportLimits, ExportResult
from fhirfus.bulk.worker import ExportWorker
from fhirfus.bulk.writer import WrittenFile
from fhirfus.errors import InvalidRequest
from fhirfus.fhir.validation import parameter_list, parameter_parts
from fhirfus.interactions import viewdefinition
from fhirfus.interactions.viewdefinition import Inputs, Shaper, ViewRun
from fhirfus.store.repository import Store, format_instant

LEVEL = "view"
SUFFIXES = {"ndjson": "ndjson", "csv": "csv", "json": "json", "parquet": "parquet"}
MEDIA_TYPES = {f".{suffix}": viewdefinition.FORMATS[fmt] for fmt, suffix in SUFFIXES.items()}
#: Parameters of the run that apply to the whole export (``view`` parts name the views).
OPTIONS = ("_format", "header", "_since", "patient", "group", "policy", "clientTrackingId")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
BEAT_ROWS = 1000  # rows between two checkpoints


def view_parts(body: Any) -> tuple[list[dict[str, Any]], Any]:
    """The ``view`` parameters of a Parameters body (name → value of each part), and the body without them."""
    if not isinstance(body, Mapping) or body.get("resourceType") != "Parameters":
        return [], body
    views, rest = [], []
    for index, parameter in enumerate(parameter_list(body)):
        if not isinstance(parameter, Mapping) or parameter.get("name") != "view":
            rest.append(parameter)
            continue
        parts: dict[str, Any] = {}
        for part in parameter_parts(parameter, f"Parameters.parameter[{index}]"):
            values = [v for k, v in part.items() if k.startswith("value") or k == "resource"]
            if len(values) != 1:
                raise InvalidRequest("Every part of 'view' needs a name and exactly one value", "view.part")
            parts[part["name"]] = values[0]
        views.append(parts)
    return views, {**body, "parameter": rest}


def kick_off(worker: ExportWorker, caller: Access, parts: Sequence[Mapping[str, Any]], given: Inputs, *,
             request_url: str, base_url: str, shaper: Shaper) -> jobs.Job:
    """Check the request and queue the job (429 if this process is busy)."""
    return worker.submit(checked_request(worker.store, caller, parts, given, base_url=base_url, shaper=shaper),
                         request_url)


def checked_request(store: Store, caller: Access, parts: Sequence[Mapping[str, Any]], given: Inputs, *,
                    base_url: str, shaper: Shaper) -> ExportRequest:
    """Every view and option checked as ``$viewdefinition-run`` would (4xx now, not a failed job
    later), as the job row keeps it."""
    deidentified = caller.role == "analyst"
    shaped = deidentified or given.get("policy") is not None  # an analyst always, anybody who asks for it
    unknown = sorted(set(given) - {*OPTIONS, "viewReference", "viewResource"})
    if unknown:
        raise InvalidRequest(f"Parameter '{unknown[0]}' is not supported by $viewdefinition-export (supported: view, "
                             f"{', '.join(OPTIONS)})", unknown[0])
    views = list(parts) or ([{k: given[k] for k in ("viewReference", "viewResource") if k in given}]
                            if "viewReference" in given or "viewResource" in given else [])
    if not views:
        raise InvalidRequest("Name at least one view (a 'view' parameter with viewReference, viewCanonical or "
                             "viewResource)", "view")
    entries: list[dict[str, Any]] = []
    run: ViewRun | None = None
    policy: dict[str, str] = {}
    for index, part in enumerate(views):
        unknown = sorted(set(part) - {"name", "viewReference", "viewCanonical", "viewResource"})
        if unknown:
            raise InvalidRequest(f"Unknown part '{unknown[0]}' of view {index + 1}", f"view[{index}].{unknown[0]}")
        chosen = {"viewReference": part.get("viewReference") or part.get("viewCanonical"),
                  "viewResource": part.get("viewResource")}
        one = {k: v for k, v in given.items() if k in OPTIONS} | {k: v for k, v in chosen.items() if v is not None}
        run = viewdefinition.prepare(store, caller, one, deidentified=deidentified)
        if shaped:
            shaping = shaper(run, _text(given.get("policy")))  # refuses a view the policy cannot cover
            policy = {"name": shaping.policy_name, "sha256": shaping.policy_sha256}
        name = str(part.get("name") or run.definition.get("name") or f"view_{index + 1}")
        if not _NAME.match(name) or any(e["name"] == name for e in entries):
            raise InvalidRequest(f"View name '{name}' must be unique, start with a letter and hold letters, digits "
                                 "and '_' only (64 at most)", f"view[{index}].name")
        entries.append({"name": name, "view": run.definition, "from_guide": run.from_guide})
    assert run is not None
    operation = {
        "views": entries, "format": run.format, "header": run.header, "since": _iso(run.since),
        "patients": None if run.patients is None else sorted(run.patients),
        "policy": policy.get("name"), "policy_sha256": policy.get("sha256"), "role": caller.role,
        "grants": [[g.res_type, g.permissions] for g in caller.grants],
        "client_tracking_id": _text(given.get("clientTrackingId")),
    }
    return ExportRequest(level=LEVEL, base_url=base_url, site=caller.visibility.site, client_id=caller.client_id,
                         operation=operation)


def runner(shaper: Shaper) -> Callable[..., ExportResult]:
    """The worker's runner of ``view`` jobs, with the de-identification the API composes."""
    def run(store: Store, request: ExportRequest, directory: Path, *, job_id: str | None, limits: ExportLimits,
            checkpoint: Checkpoint | None) -> ExportResult:
        return run_view_export(store, request, directory, shaper=shaper, checkpoint=checkpoint)
    return run


def run_view_export(store: Store, request: ExportRequest, directory: Path, *, shaper: Shaper,
                    checkpoint: Checkpoint | None = None) -> ExportResult:
    """Write one file per view of the job into ``directory`` (created)."""
    operation = request.operation or {}
    caller = Access(request.client_id or "fhirfus", operation["role"], request.site,
                    tuple(Grant(t, p) for t, p in operation["grants"]))
    since = datetime.fromisoformat(operation["since"]) if operation.get("since") else None
    patients = None if operation.get("patients") is None else frozenset(operation["patients"])
    report = checkpoint or (lambda _written, _fraction: None)
    directory.mkdir(parents=True, exist_ok=True)
    transaction_time = datetime.now(UTC)
    files: list[WrittenFile] = []
    written = 0
    views = operation["views"]
    for index, entry in enumerate(views):
        run = viewdefinition.compile_run(entry["view"], entry["from_guide"], operation["format"],
                                         operation["header"], None, since, patients)
        produced = viewdefinition.rows(store, caller, run, request.base_url)
        if operation.get("policy") is not None:
            policy = shaper(run, operation["policy"])
            run = replace(run, released=policy.released)
            produced = policy.apply(produced)
        counter = [0]
        done_before, fraction = written, (index + 0.5) / len(views)

        def beat(rows: int, before: int = done_before, part: float = fraction) -> None:
            report(before + rows, part)

        counted = _counting(produced, counter, beat)
        name = f"{entry['name']}.{SUFFIXES[run.format]}"
        size = 0
        with (directory / name).open("wb") as out:
            for chunk in viewdefinition.encode(run, counted):
                out.write(chunk)
                size += len(chunk)
        written += counter[0]
        files.append(WrittenFile(name, "output", entry["name"], 1, counter[0], size))
        report(written, (index + 1) / len(views))
    return ExportResult(transaction_time, files)


def _counting(rows: Iterator[dict[str, Any]], counter: list[int],
              beat: Callable[[int], None]) -> Iterator[dict[str, Any]]:
    for row in rows:
        counter[0] += 1
        if counter[0] % BEAT_ROWS == 0:
            beat(counter[0])  # raises when the job was cancelled or this process stops
        yield row


def manifest(job: jobs.Job, files: Sequence[WrittenFile], status_url: str) -> dict[str, Any]:
    """The operation's output: a Parameters resource (SQL on FHIR v2, ViewDefinitionExport)."""
    operation = job.request.operation or {}
    parameters: list[dict[str, Any]] = [
        {"name": "exportId", "valueString": job.id},
        *([{"name": "clientTrackingId", "valueString": operation["client_tracking_id"]}]
          if operation.get("client_tracking_id") else []),
        {"name": "status", "valueCode": "completed"},
        {"name": "location", "valueUri": status_url},
        {"name": "_format", "valueCode": operation.get("format", "ndjson")},
    ]
    if operation.get("policy"):  # what the analysis export's manifest says too: the policy and its hash
        parameters += [{"name": "policy", "valueString": operation["policy"]},
                       {"name": "policySha256", "valueString": operation.get("policy_sha256") or ""}]
    if job.transaction_time is not None:
        parameters.append({"name": "exportStartTime", "valueInstant": format_instant(job.transaction_time)})
    parameters.append({"name": "exportEndTime", "valueInstant": format_instant(job.updated)})
    for written in files:
        if written.kind == "output":
            parameters.append({"name": "output", "part": [
                {"name": "name", "valueString": written.res_type},
                {"name": "location", "valueUri": f"{status_url}/{written.name}"}]})
    return {"resourceType": "Parameters", "parameter": parameters}


def accepted(job: jobs.Job, status_url: str) -> dict[str, Any]:
    """The kick-off's answer body (202): the export's id, status and where to poll."""
    operation = job.request.operation or {}
    return {"resourceType": "Parameters", "parameter": [
        {"name": "exportId", "valueString": job.id},
        *([{"name": "clientTrackingId", "valueString": operation["client_tracking_id"]}]
          if operation.get("client_tracking_id") else []),
        {"name": "status", "valueCode": "accepted"},
        {"name": "location", "valueUri": status_url},
        {"name": "cancelUrl", "valueUri": status_url},
        {"name": "_format", "valueCode": operation.get("format", "ndjson")}]}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
