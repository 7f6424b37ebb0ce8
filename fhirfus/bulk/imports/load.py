"""One import run: fetch the inputs, then load them chunk by chunk through the transaction path.

Every chunk of lines is one transaction Bundle through ``interactions.bundles`` (validation, site
labelling, conditional references, bulk inserts); the job's progress and the chunk's line errors
are written in that same transaction, so a job adopted after a crash resumes at the first line no
commit covered, and no line is loaded twice or reported twice.

A resource that appears twice is written twice, in file order (the later line wins).

Errors per line: a line that is not JSON, not a resource, of another type than its input says, or
that the write path refuses, becomes one OperationOutcome (naming the input URL, the line number
and the element) and is taken out of its chunk, which is retried without it; after
``MAX_RETRIES`` refusals in one chunk its lines are written one at a time. Nothing else is lost.

Ids: a resource with an ``id`` is written with PUT, so importing the same files again converges
(an unchanged resource gets no new version). A site client's resources go under ids derived from
its site and the file's id (``derived_id``), with the references between the import's files
rewritten to match: a site never writes under, nor learns of, an id another site uses.

References: inputs are loaded in dependency order (``LOAD_ORDER``), so that conditional references
(``Practitioner?identifier=…``, as Synthea writes) find their targets. A literal local reference
must name a resource the caller can see or one this import declares (any line of any of its
inputs); the check is deferred to the job as a whole in that sense, not to each chunk. A line whose
target was declared but then refused itself is the one case left dangling.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, select, tuple_

from fhirfus.auth.access import WriteAudit
from fhirfus.bulk.imports import jobs
from fhirfus.bulk.imports.sources import FetchLimits, fetch
from fhirfus.errors import FhirError, InvalidRequest, Issue
from fhirfus.fhir.references import reference_target, rewrite_references
from fhirfus.fhir.validation import parse_json, valid_id
from fhirfus.interactions import bundles, references
from fhirfus.store.repository import Store

CHUNK_LINES = 500
MAX_RETRIES = 8
PROVENANCE_TARGETS = 1000
#: Types others refer to come first (the rest keep their given order after these).
LOAD_ORDER = ("Organization", "Location", "Practitioner", "PractitionerRole", "Medication", "Device",
              "Patient", "RelatedPerson", "Group", "Encounter", "Condition", "Procedure", "Observation",
              "DiagnosticReport", "MedicationRequest", "Claim", "ExplanationOfBenefit")
ID_NAMESPACE = uuid.UUID("8f0c3f5e-2b1d-4c1e-9a57-6b1f3c0d2e41")
_ENTRY = re.compile(r"^Bundle\.entry\[(\d+)\]")
#: ``checkpoint()`` between chunks: raises to stop the run (shutdown, or the job is not ours).
Checkpoint = Callable[[], None]


def input_file(directory: Path, index: int) -> Path:
    return directory / f"input-{index}.ndjson"


def error_file(index: int) -> str:
    return f"errors-{index}.ndjson"


def load_rank(res_type: str | None) -> int:
    return LOAD_ORDER.index(res_type) if res_type in LOAD_ORDER else len(LOAD_ORDER)


def derived_id(site: str, res_type: str, res_id: str) -> str:
    """The id a site's import stores ``res_type/res_id`` under: the same on every import."""
    return str(uuid.uuid5(ID_NAMESPACE, f"{site}|{res_type}/{res_id}"))


class ImportFilesLost(FhirError):
    status = 500
    issue_code = "exception"


@dataclass(frozen=True)
class Pending:
    number: int
    resource: dict

    @property
    def res_type(self) -> str:
        return str(self.resource["resourceType"])


def run_import(store: Store, job: jobs.ImportJob, owner: str, limits: FetchLimits, *, base_url: str = "",
               checkpoint: Checkpoint = lambda: None, audit: WriteAudit | None = None,
               chunk_lines: int = CHUNK_LINES, table: jobs.ImportJobs = jobs.TABLE) -> None:
    """Run (or resume) ``job`` to its last phase, its progress written to ``table``; raises
    ``jobs.Stopped`` if it is taken away."""
    assert job.directory is not None
    run = _Run(store, job, owner, Path(job.directory), base_url, checkpoint, chunk_lines, table)
    if run.progress["phase"] == jobs.FETCH:
        run.fetch_all(limits)
    if run.progress["phase"] == jobs.LOAD:
        missing = [i for i in range(len(run.inputs)) if not input_file(run.directory, i).is_file()]
        if missing:
            raise ImportFilesLost(f"The fetched inputs of import job {job.id} are no longer in {run.directory} "
                                  "(FHIRFUS_EXPORT_DIR must be one directory shared by every server process)")
        run.load_all()
        run.finish(audit)
    run.write_error_files()


class _Run:
    def __init__(self, store: Store, job: jobs.ImportJob, owner: str, directory: Path, base_url: str,
                 checkpoint: Checkpoint, chunk_lines: int, table: jobs.ImportJobs) -> None:
        self.store = store
        self.table = table
        self.job = job
        self.owner = owner
        self.directory = directory
        self.base = base_url
        self.checkpoint = checkpoint
        self.chunk_lines = max(1, chunk_lines)
        self.inputs: list[dict] = job.request["inputs"]
        self.progress = copy.deepcopy(job.progress)
        requester = job.caller
        self.site = requester.site if requester.role == "site" else None
        self.caller = replace(requester, derived_ids=self.site is not None)
        self.context = bundles.Context(store, self.caller, base_url, integrity=False)
        self.declared: set[str] = set()

    # --- fetching ----------------------------------------------------------------------------

    def fetch_all(self, limits: FetchLimits) -> None:
        used = 0
        for index, item in enumerate(self.inputs):
            target = input_file(self.directory, index)
            if not item.get("uploaded"):
                self.checkpoint()
                used += fetch(item["url"], target, limits, limits.max_bytes - used, self.checkpoint)
        progress = {**self.progress, "phase": jobs.LOAD}
        with self.store.writing() as conn:
            self.table.commit_progress(conn, self.job.id, self.owner, progress)
        self.progress = progress

    # --- loading -----------------------------------------------------------------------------

    def load_all(self) -> None:
        self.declared = self._declared()
        for index in range(self.progress["input"], len(self.inputs)):
            if index != self.progress["input"]:
                self.progress = {**self.progress, "input": index, "line": 0}
            chunk: list[tuple[int, bytes]] = []
            for number, raw in self._lines(index, after=self.progress["line"]):
                chunk.append((number, raw))
                if len(chunk) == self.chunk_lines:
                    self._chunk(index, chunk)
                    chunk = []
                    self.checkpoint()
            if chunk:
                self._chunk(index, chunk)
                self.checkpoint()

    def _lines(self, index: int, after: int) -> Iterator[tuple[int, bytes]]:
        with input_file(self.directory, index).open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                if number > after and line.strip():
                    yield number, line

    def _declared(self) -> set[str]:
        """``Type/id`` (as stored) of every line of every input that names one."""
        declared: set[str] = set()
        for index in range(len(self.inputs)):
            for number, raw in self._lines(index, after=0):
                if number % 10_000 == 0:
                    self.checkpoint()
                try:
                    resource = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str) \
                        and isinstance(resource.get("id"), str):
                    declared.add(self._stored_key(resource["resourceType"], resource["id"]))
        return declared

    def _stored_key(self, res_type: str, res_id: str) -> str:
        return f"{res_type}/{derived_id(self.site, res_type, res_id) if self.site else res_id}"

    def _pending(self, index: int, number: int, raw: bytes) -> Pending:
        """The line as a resource ready to write, or ``FhirError`` saying why not."""
        resource = parse_json(raw)
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise InvalidRequest("Not a FHIR resource (no resourceType)", "resourceType")
        res_type = resource["resourceType"]
        expected = self.inputs[index].get("type")
        if expected and res_type != expected:
            raise InvalidRequest(f"A {res_type} in an input of type {expected}", "resourceType")
        self.caller.require(res_type, "c")
        self.caller.require(res_type, "u")
        res_id = resource.get("id")
        if res_id is not None and (not isinstance(res_id, str) or not valid_id(res_id)):
            raise InvalidRequest(f"Invalid id {res_id!r}", f"{res_type}.id")
        if self.site is not None:
            site = self.site
            if res_id is not None:
                resource["id"] = derived_id(site, res_type, res_id)

            def local(reference: str) -> str | None:
                """A relative reference (or one under this server's base) to a resource of the import."""
                if reference.startswith(("urn:", "#")) or "?" in reference or \
                        ("://" in reference and not (self.base and reference.startswith(self.base + "/"))):
                    return None
                target_type, target_id = reference_target(reference)
                if not target_type or not target_id:
                    return None
                key = f"{target_type}/{derived_id(site, target_type, target_id)}"
                return key if key in self.declared else None

            rewrite_references(resource, local)
        return Pending(number, resource)

    def _chunk(self, index: int, lines: list[tuple[int, bytes]]) -> None:
        errors: list[tuple[int, int, dict]] = []
        pending: list[Pending] = []
        for number, raw in lines:
            try:
                pending.append(self._pending(index, number, raw))
            except FhirError as exc:
                errors.append(self._error(index, number, exc, None))
        seen: set[tuple[str, str]] = set()
        for item in pending:  # a resource twice in one chunk: the chunk ends before its second line
            key = (item.res_type, str(item.resource.get("id")))
            if "id" in item.resource and key in seen:
                cut = next(position for position, (number, _raw) in enumerate(lines) if number == item.number)
                self._chunk(index, lines[:cut])
                self._chunk(index, lines[cut:])
                return
            seen.add(key)
        last = lines[-1][0]
        retries = 0
        while pending and retries <= MAX_RETRIES:
            try:
                self._write(index, pending, errors, last, len(lines))
                return
            except FhirError as exc:
                position = _entry_index(exc)
                if position is None or position >= len(pending):
                    break
                errors.append(self._error(index, pending[position].number, exc, pending[position].res_type))
                del pending[position]
                retries += 1
        if pending:
            self._one_by_one(index, lines, pending, errors)
            return
        self._commit_only(index, errors, last, len(lines))

    def _one_by_one(self, index: int, lines: list[tuple[int, bytes]], pending: list[Pending],
                    errors: list[tuple[int, int, dict]]) -> None:
        """Each line its own transaction, in file order; a commit carries the errors of the lines
        before it, so the progress never names a line whose fate is not committed with it."""
        waiting = {item.number: item for item in pending}
        known = {number: error for _index, number, error in errors}
        told: list[tuple[int, int, dict]] = []
        read = 0
        for number, _raw in lines:
            read += 1
            item = waiting.get(number)
            if item is None:
                told.append((index, number, known[number]))
                continue
            try:
                self._write(index, [item], told, number, read)
                told, read = [], 0
            except FhirError as exc:
                told.append(self._error(index, number, exc, item.res_type))
        if read:
            self._commit_only(index, told, lines[-1][0], read)

    def _advanced(self, index: int, line: int, read: int, loaded: int, failed: int) -> dict:
        counts = [dict(c) for c in self.progress["inputs"]]
        counts[index] = {"read": counts[index]["read"] + read, "loaded": counts[index]["loaded"] + loaded,
                         "errors": counts[index]["errors"] + failed}
        return {**self.progress, "input": index, "line": line, "chunks": self.progress["chunks"] + 1,
                "inputs": counts}

    def _write(self, index: int, pending: list[Pending], errors: list[tuple[int, int, dict]], line: int,
               read: int) -> None:
        entries = [_entry(copy.deepcopy(item.resource)) for item in pending]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        progress = self._advanced(index, line, read, len(pending), len(errors))

        def before_commit(conn: Connection) -> None:
            self._check_references(conn, [entry["resource"] for entry in entries])
            self.table.commit_progress(conn, self.job.id, self.owner, progress, errors)

        bundles.process(self.context, bundle, "minimal", before_commit=before_commit)
        self.progress = progress

    def _commit_only(self, index: int, errors: list[tuple[int, int, dict]], line: int, read: int) -> None:
        progress = self._advanced(index, line, read, 0, len(errors))
        with self.store.writing() as conn:
            self.table.commit_progress(conn, self.job.id, self.owner, progress, errors)
        self.progress = progress

    def _check_references(self, conn: Connection, written: list[dict]) -> None:
        missing = references.missing_targets(conn, self.caller, enumerate(written), self.base)
        for position, path, target in missing:
            if target not in self.declared:
                raise InvalidRequest(
                    f"Bundle.entry[{position}]: {path} refers to {target}, which is neither stored nor in this import",
                    path)

    def _error(self, index: int, number: int, exc: FhirError, res_type: str | None) -> tuple[int, int, dict]:
        url = self.inputs[index]["url"]
        issues = []
        for issue in exc.issues:
            diagnostics = _ENTRY.sub("", issue.diagnostics).removeprefix(": ")
            expressions = tuple(_unanchored(e, res_type) for e in issue.expression)
            issues.append(Issue(f"{url} line {number}: {diagnostics}", issue.code, "error", expressions).to_fhir())
        return index, number, {"resourceType": "OperationOutcome", "issue": issues}

    # --- the end -----------------------------------------------------------------------------

    def finish(self, audit: WriteAudit | None) -> None:
        """A Provenance of the job (and, when requests are audited, its AuditEvent) with the last phase."""
        progress = {**self.progress, "phase": jobs.DONE}
        targets = self._loaded_targets()
        caller = replace(self.caller, audit=audit)
        if not targets:
            with self.store.writing() as conn:
                self.table.commit_progress(conn, self.job.id, self.owner, progress)
                if audit is not None:
                    audit.record_in(conn)
            self.progress = progress
            return
        provenance = self._provenance(targets)
        bundle = {"resourceType": "Bundle", "type": "transaction",
                  "entry": [{"resource": provenance, "request": {"method": "PUT", "url": f"Provenance/{provenance['id']}"}}]}
        bundles.process(replace(self.context, caller=caller), bundle, "minimal",
                        before_commit=lambda conn: self.table.commit_progress(conn, self.job.id, self.owner, progress))
        self.progress = progress

    def _loaded_targets(self) -> list[str]:
        """What the job wrote that the caller sees (Patients first), as many as a Provenance names."""
        keys = sorted((tuple(k.split("/", 1)) for k in self.declared), key=lambda k: (k[0] != "Patient", k))
        found: list[str] = []
        rows = self.caller.visibility.resources()
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            with self.store.reading() as conn:
                present = {(r.res_type, r.res_id) for r in conn.execute(
                    select(rows.c.res_type, rows.c.res_id)
                    .where(tuple_(rows.c.res_type, rows.c.res_id).in_(chunk), rows.c.deleted.is_(False)))}
            found += [f"{t}/{i}" for t, i in chunk if (t, i) in present]
            if len(found) >= PROVENANCE_TARGETS:
                break
        return found[:PROVENANCE_TARGETS]

    def _provenance(self, targets: list[str]) -> dict:
        counts = self.progress["inputs"]
        loaded = sum(c["loaded"] for c in counts)
        failed = sum(c["errors"] for c in counts)
        return {
            "resourceType": "Provenance",
            "id": f"import-{self.job.id}",
            "target": [{"reference": t} for t in targets],
            "recorded": datetime.now(UTC).isoformat(timespec="seconds"),
            "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                                     "code": "UPDATE"}],
                         "text": f"$import job {self.job.id}: {loaded} resources loaded, {failed} lines refused"},
            "agent": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                            "code": "author"}]},
                       "who": {"display": f"client {self.job.client_id}"}}],
            "entity": [{"role": "source", "what": {"display": item["url"]}} for item in self.inputs],
        }

    def write_error_files(self) -> None:
        for index, counts in enumerate(self.progress["inputs"]):
            if counts["errors"]:
                with (self.directory / error_file(index)).open("wb") as handle:
                    for outcome in jobs.errors_of(self.store, self.job.id, index):
                        handle.write(orjson.dumps(outcome) + b"\n")


def _entry(resource: dict) -> dict:
    if resource.get("id"):
        return {"resource": resource, "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}}
    return {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}


def _entry_index(exc: FhirError) -> int | None:
    for issue in exc.issues:
        match = _ENTRY.match(issue.diagnostics)
        if match:
            return int(match.group(1))
    return None


def _unanchored(expression: str, res_type: str | None) -> str:
    """``Bundle.entry[3].resource.gender`` → ``Patient.gender``: the element of the line's resource."""
    match = _ENTRY.match(expression)
    rest = expression[match.end():] if match else None
    if res_type is None or rest is None or not rest.startswith(".resource"):
        return expression
    return res_type + rest.removeprefix(".resource")


def progress_text(progress: dict, inputs: list[dict[str, Any]]) -> str:
    counts = progress["inputs"]
    read = sum(c["read"] for c in counts)
    loaded = sum(c["loaded"] for c in counts)
    failed = sum(c["errors"] for c in counts)
    if progress["phase"] == jobs.FETCH:
        return f"fetching {len(inputs)} input(s)"
    return (f"input {min(progress['input'] + 1, len(inputs))} of {len(inputs)}: {read} lines read, "
            f"{loaded} resources loaded, {failed} lines refused")
