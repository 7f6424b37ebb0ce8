"""`make bench`, part 3: ingest over HTTP with transaction Bundles on PostgreSQL, beside baselines.

A script, not a test: it prints figures, it asserts nothing. On throw-away PostgreSQL databases
(``FHIRFUS_TEST_POSTGRES_URL``) it

1. starts the real server (``fhirfus serve --workers N``, one worker process per core by default,
   its CPU metered over all workers) and posts
   transaction Bundles of 100 entries over 4 keep-alive clients: study patients, each with a
   Condition, an MRgFUS Procedure (target ``vo-complex``), a complete TWSTRS QuestionnaireResponse
   and Observations, linked by ``urn:uuid`` references. The server derives 4 score Observations
   from every TWSTRS response; those are counted apart from the posted resources. Every answer is
   checked (200, one ``201 Created`` per entry);
2. inserts the same documents (references already resolved) into the ``resources`` table of a
   second fresh database with SQLAlchemy Core, 100 rows per transaction on as many threads as
   there are clients: the raw baseline. No history, no index rows, no validation, no HTTP;
3. posts ONE 10,000-entry transaction Bundle to a single-worker server on the same database and reports its time and the
   server's resident memory before and at its peak (``VmHWM`` after resetting it through
   ``/proc/PID/clear_refs``, cross-checked by sampling ``VmRSS``);
4. profiles ``fhirfus.interactions.bundles.process`` in-process with pyinstrument on a few of the
   same Bundles (a third fresh database) and prints the top 10 hotspots, by own time and by
   inclusive time of fhirfus functions, so the team sees where the time goes.

Results are printed as rich tables and appended to ``bench-results/bench.md``. The databases are
dropped (``WITH (FORCE)``) at the end, also on Ctrl-C or SIGTERM.

The server, database, CPU-metering and report helpers come from ``bench/harness.py`` (imported as
``bench``), so the bench scripts start servers and meter CPU the same way.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import harness as bench  # bench/harness.py: bench/ leads sys.path when a benchmark runs as a script
import httpx
import orjson
from rich.markup import escape
from sqlalchemy import insert

from fhirfus.auth.access import SERVER
from fhirfus.db.engine import make_engine
from fhirfus.db.tables import resources
from fhirfus.domain import twstrs
from fhirfus.domain.conformance import load_conformance
from fhirfus.fhir.references import rewrite_references
from fhirfus.heap import freeze_start_up_heap
from fhirfus.interactions import bundles
from fhirfus.settings import Settings
from fhirfus.store.repository import Store, stamp

DEFAULT_MAX_BODY_BYTES = Settings().max_body_bytes

console = bench.console

SEED = 20260401
BUNDLE_ENTRIES = 100
BIG_BUNDLE_ENTRIES = 10_000
RAW_ROWS_PER_TX = 100
SCORES_PER_RESPONSE = 4
DEFAULT_WORKERS = bench.DEFAULT_WORKERS  # the 10,000-entry Bundle always goes to one worker

#: The aim of the issue (PostgreSQL, 4 keep-alive clients, server and load generator on 2 cores).
AIM_RESOURCES_PER_S = 4_000.0  # issue 21 raised issue 4's 3,000
MEDPLUM_REFERENCE = "Medplum on the same machine: about 100–150 resources/s (issue 4, not measured here)"


@dataclass(frozen=True)
class Sizes:
    """Fixed amounts of work (not durations), so two runs are comparable."""

    bundles: int
    warmup: int
    profiled: int


FULL = Sizes(bundles=200, warmup=8, profiled=10)
QUICK = Sizes(bundles=40, warmup=4, profiled=3)


# --- realistic transaction Bundles -----------------------------------------------------------

SITE_PATIENT = "https://fhirfus.org/fhir/sid/site-patient/B"
PROCEDURE_SYSTEM = "https://fhirfus.org/fhir/CodeSystem/procedure"
TARGET_SYSTEM = "https://fhirfus.org/fhir/CodeSystem/mrgfus-target"
LATERALITY = "https://fhirfus.org/fhir/StructureDefinition/laterality"
CD_SUBTYPE = "https://fhirfus.org/fhir/CodeSystem/cd-subtype"
SONICATION = "https://fhirfus.org/fhir/CodeSystem/sonication-parameter"
UCUM = "http://unitsofmeasure.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
SIDES = (("419161000", "Unilateral left"), ("419465000", "Unilateral right"))
#: (code, UCUM unit, low, high, decimals): inside the "soft" plausibility ranges, so no warnings.
PARAMETERS = (
    ("sonication-count", "1", 6, 22, 0),
    ("power", "W", 450, 900, 0),
    ("energy", "J", 9_000, 26_000, 0),
    ("peak-temperature", "Cel", 52, 60, 0),
    ("skull-density-ratio", "1", 0.42, 0.62, 2),
)
#: One patient's entries: Patient, Condition, Procedure, QuestionnaireResponse, 5 sonication
#: parameters and a body weight; references only point backwards, so any prefix of a group is
#: a consistent Bundle (the last group of an odd-sized Bundle is simply cut short).
GROUP_SIZE = 4 + len(PARAMETERS) + 1


def _twstrs_items() -> list[tuple[str, list[tuple[str, int]]]]:
    """(group linkId, [(item linkId, maximum)]) of the scored TWSTRS items, from the Questionnaire."""
    definition = twstrs.versions()[twstrs.DEFAULT_VERSION].definition
    groups: dict[str, list[tuple[str, int]]] = {}
    for link_id, item in definition.items.items():
        if item.type == "integer" and not item.read_only and item.maximum is not None:
            groups.setdefault(link_id.partition(".")[0], []).append((link_id, int(item.maximum)))
    return list(groups.items())


TWSTRS_ITEMS = _twstrs_items()


def twstrs_response(rng: random.Random, subject: str, authored: date) -> dict[str, Any]:
    """A complete TWSTRS response as a site sends it (nested groups, every item answered)."""
    groups = []
    for group, items in TWSTRS_ITEMS:
        answered = []
        for link_id, maximum in items:
            answered.append({"linkId": link_id, "answer": [{"valueInteger": rng.randint(0, maximum)}]})
            if link_id == "severity.anterocollis-retrocollis":
                direction = rng.choice(("anterocollis", "retrocollis"))
                answered.append({"linkId": f"{link_id}.direction",
                                 "answer": [{"valueCoding": {"system": CD_SUBTYPE, "code": direction}}]})
        groups.append({"linkId": group, "item": answered})
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": f"{twstrs.TWSTRS_URL}|{twstrs.DEFAULT_VERSION}",
        "status": "completed",
        "subject": {"reference": subject},
        "authored": f"{authored.isoformat()}T10:00:00+01:00",
        "item": groups,
    }


def _urn(rng: random.Random) -> str:
    return f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}"


def patient_group(rng: random.Random, number: int) -> list[dict[str, Any]]:
    """The Bundle entries of one study patient (``GROUP_SIZE`` of them), POSTs with urn:uuid fullUrls."""
    patient_urn, procedure_urn = _urn(rng), _urn(rng)
    subject = {"reference": patient_urn}
    baseline = date(2021, 1, 4) + timedelta(days=rng.randint(0, 1200))
    session = baseline + timedelta(days=rng.randint(10, 45))
    side_code, side_display = rng.choice(SIDES)
    resources_: list[tuple[str, dict[str, Any]]] = [
        (patient_urn, {
            "resourceType": "Patient",
            "identifier": [{"system": SITE_PATIENT, "value": f"B{number:07d}-{rng.getrandbits(32):08x}"}],
            "gender": rng.choice(("female", "female", "male")),
            "birthDate": (date(1950, 1, 1) + timedelta(days=rng.randint(0, 16000))).isoformat(),
        }),
        (_urn(rng), {
            "resourceType": "Condition",
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "verificationStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "G24.3",
                                 "display": "Spasmodic torticollis"},
                                {"system": CD_SUBTYPE, "code": rng.choice(("rotational-torticollis", "laterocollis",
                                                                           "anterocollis", "retrocollis"))}],
                     "text": "Cervical dystonia"},
            "subject": subject,
            "onsetDateTime": (baseline - timedelta(days=rng.randint(400, 6000))).isoformat(),
        }),
        (procedure_urn, {
            "resourceType": "Procedure",
            "status": "completed",
            "code": {"coding": [{"system": PROCEDURE_SYSTEM, "code": "mrgfus-ablation", "display": "MRgFUS ablation"},
                                {"system": "http://www.ama-assn.org/go/cpt", "code": "0398T"}]},
            "subject": subject,
            "performedDateTime": session.isoformat(),
            "bodySite": [{
                "coding": [{"system": TARGET_SYSTEM, "code": "vo-complex"}],
                "extension": [{"url": LATERALITY, "valueCodeableConcept": {"coding": [{
                    "system": "http://snomed.info/sct", "code": side_code, "display": side_display}]}}],
            }],
        }),
        (_urn(rng), twstrs_response(rng, patient_urn, baseline)),
    ]
    for code, unit, low, high, digits in PARAMETERS:
        value = round(rng.uniform(low, high), digits)
        resources_.append((_urn(rng), {
            "resourceType": "Observation",
            "status": "final",
            "category": [{"coding": [{"system": CATEGORY, "code": "procedure"}]}],
            "code": {"coding": [{"system": SONICATION, "code": code}]},
            "subject": subject,
            "partOf": [{"reference": procedure_urn}],
            "effectiveDateTime": session.isoformat(),
            "valueQuantity": {"value": value if digits else int(value), "unit": unit, "system": UCUM, "code": unit},
        }))
    resources_.append((_urn(rng), {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}]},
        "subject": subject,
        "effectiveDateTime": baseline.isoformat(),
        "valueQuantity": {"value": round(rng.uniform(48, 110), 1), "unit": "kg", "system": UCUM, "code": "kg"},
    }))
    return [{"fullUrl": urn, "resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}
            for urn, resource in resources_]


@dataclass(frozen=True)
class Bundle:
    """A transaction Bundle, its JSON bytes, and how many score Observations it will yield."""

    document: dict[str, Any]
    body: bytes
    entries: int
    responses: int


def make_bundle(rng: random.Random, entries: int, first_patient: int) -> Bundle:
    """A Bundle of ``entries`` POSTs, whole patient groups (the last one possibly cut short)."""
    collected: list[dict[str, Any]] = []
    number = first_patient
    while len(collected) < entries:
        collected += patient_group(rng, number)
        number += 1
    collected = collected[:entries]
    document = {"resourceType": "Bundle", "type": "transaction", "entry": collected}
    responses = sum(1 for e in collected if e["resource"]["resourceType"] == "QuestionnaireResponse")
    return Bundle(document, orjson.dumps(document), entries, responses)


def make_bundles(count: int, entries: int, rng: random.Random, first_patient: int) -> list[Bundle]:
    """``count`` Bundles with distinct patient numbers (site identifiers never collide)."""
    per_bundle = -(-entries // GROUP_SIZE)
    return [make_bundle(rng, entries, first_patient + i * per_bundle) for i in range(count)]


# --- HTTP throughput -------------------------------------------------------------------------


def check_response(bundle: Bundle, status: int, body: bytes) -> str | None:
    """None when the transaction answered 200 with one ``201 Created`` per entry."""
    if status != 200:
        return f"POST transaction → {status}: {body[:300]!r}"
    answer = orjson.loads(body)
    statuses = [e.get("response", {}).get("status") for e in answer.get("entry", [])]
    created = sum(1 for s in statuses if s and s.startswith("201"))
    if answer.get("type") != "transaction-response" or created != bundle.entries:
        return f"transaction-response with {created} of {bundle.entries} entries created"
    return None


def post_bundles(base: str, batch: Sequence[Bundle], clients: int, label: str, probe: Any) -> Any:
    """POST every Bundle once over ``clients`` keep-alive clients; check the answers afterwards
    (parsing them inside the timed phase would take client CPU from the 2 cores being measured)."""
    sessions = [httpx.Client(base_url=base, headers=bench.HEADERS, timeout=300) for _ in range(clients)]
    answers: list[tuple[int, bytes] | None] = [None] * len(batch)

    def operation(worker: int, job: int) -> str | None:
        response = sessions[worker].post("", content=batch[job].body)
        answers[job] = (response.status_code, response.content)
        return None

    try:
        measured = bench.drive_threads(clients, len(batch), operation, label, probe)
    finally:
        for session in sessions:
            session.close()
    problems = [p for b, a in zip(batch, answers, strict=True)
                if (p := "no answer" if a is None else check_response(b, *a)) is not None]
    measured.errors += len(problems)
    measured.first_error = measured.first_error or (problems[0] if problems else None)
    return measured


# --- the raw baseline ------------------------------------------------------------------------


def raw_rows(batch: Sequence[Bundle]) -> list[list[dict[str, Any]]]:
    """The posted documents as ``resources`` rows, urn:uuid references already resolved, 100 a
    transaction: what is left of an ingest without FHIR, indexing, history and HTTP."""
    moment = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for bundle in batch:
        ids = {e["fullUrl"]: e["fullUrl"].removeprefix("urn:uuid:") for e in bundle.document["entry"]}
        mapping = {e["fullUrl"]: f"{e['resource']['resourceType']}/{ids[e['fullUrl']]}"
                   for e in bundle.document["entry"]}
        for entry in bundle.document["entry"]:
            resource = copy.deepcopy(entry["resource"])  # the Bundle documents are posted as they are
            rewrite_references(resource, mapping.get)
            res_id = ids[entry["fullUrl"]]
            rows.append({"res_type": resource["resourceType"], "res_id": res_id, "version": 1,
                         "last_updated": moment, "deleted": False, "content": stamp(resource, res_id, 1, moment)})
    return [rows[i:i + RAW_ROWS_PER_TX] for i in range(0, len(rows), RAW_ROWS_PER_TX)]


def raw_baseline(url: str, batches: list[list[dict[str, Any]]], clients: int, probe: Any) -> Any:
    """SQLAlchemy Core multi-row INSERTs through ``Store.writing()`` (the server's transaction
    scope), one batch per transaction, on as many threads as there are HTTP clients."""
    engine = make_engine(url)
    try:
        store = Store(engine)
        # Open the pool's connections first: their PostgreSQL backends must exist when the CPU
        # meter starts, or their CPU is not counted (the meter finds backends by process title).
        opened = [engine.connect() for _ in range(clients)]
        for conn in opened:
            conn.close()

        def operation(_worker: int, job: int) -> str | None:
            with store.writing() as conn:
                conn.execute(insert(resources), batches[job])
            return None

        measured = bench.drive_threads(clients, len(batches), operation,
                                       f"raw insert, {RAW_ROWS_PER_TX} rows/tx", probe)
    finally:
        engine.dispose()
    measured.count = sum(len(b) for b in batches)  # rows, so that .rate is rows per second
    return measured


# --- peak memory of one big Bundle -----------------------------------------------------------


def _status_kib(pid: int, key: str) -> int | None:
    """A ``VmRSS``/``VmHWM`` line of /proc/PID/status in KiB (None where there is no /proc)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak(pid: int) -> bool:
    """Reset the process's ``VmHWM`` to its current RSS (Linux ≥ 4.0, same user): the peak then
    belongs to the next request alone, not to whatever the server did before."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@contextmanager
def rss_sampler(pid: int, interval_s: float = 0.005) -> Iterator[list[int]]:
    """Samples ``VmRSS`` on a thread while the block runs; yields the list of samples (KiB)."""
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            value = _status_kib(pid, "VmRSS")
            if value is not None:
                samples.append(value)
            stop.wait(interval_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


@dataclass
class BigBundle:
    entries: int
    derived: int
    request_bytes: int
    response_bytes: int = 0
    seconds: float = 0.0
    rss_before_kib: int | None = None
    peak_kib: int | None = None
    rss_after_kib: int | None = None
    peak_source: str = ""
    problem: str | None = None
    body_limit: int | None = None


def post_big_bundle(base: str, pid: int, bundle: Bundle) -> BigBundle:
    result = BigBundle(bundle.entries, bundle.responses * SCORES_PER_RESPONSE, len(bundle.body))
    result.rss_before_kib = _status_kib(pid, "VmRSS")
    reset = _reset_peak(pid)
    with httpx.Client(base_url=base, headers=bench.HEADERS, timeout=600) as client, rss_sampler(pid) as samples:
        start = time.perf_counter()
        response = client.post("", content=bundle.body)
        result.seconds = time.perf_counter() - start
    result.response_bytes = len(response.content)
    result.problem = check_response(bundle, response.status_code, response.content)
    high_water = _status_kib(pid, "VmHWM") if reset else None
    sampled = max(samples) if samples else None
    candidates = [v for v in (high_water, sampled) if v is not None]
    result.peak_kib = max(candidates) if candidates else None
    result.peak_source = "VmHWM (reset before the request)" if reset else "sampled VmRSS every 5 ms"
    result.rss_after_kib = _status_kib(pid, "VmRSS")
    return result


@contextmanager
def ingest_server(url: str, workdir: Path, body_limit: int | None, workers: int = 1) -> Iterator[Any]:
    """``fhirfus serve`` as ``bench/harness.py`` starts it, with ``workers`` processes; ``body_limit``
    only when the big Bundle would not fit the server's default limit (a larger ``--big-entries``)."""
    port = bench.free_port()
    env = dict(os.environ, FHIRFUS_DATABASE_URL=url, FHIRFUS_AUTH="off")
    if body_limit is not None:
        env["FHIRFUS_MAX_BODY_BYTES"] = str(body_limit)
    command = [*bench.fhirfus_command(), "serve", "--port", str(port), "--no-migrate", "--workers", str(workers)]
    with bench.server_process(command, env, port, workdir / f"fhirfus-{port}.log") as running:
        yield running


# --- profile ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hotspot:
    function: str
    where: str
    seconds: float


@dataclass
class Profile:
    bundles: int
    seconds: float
    own: list[Hotspot] = field(default_factory=list)
    inclusive: list[Hotspot] = field(default_factory=list)


def _frame_key(frame: Any) -> tuple[str, str]:
    return frame.function or "?", f"{frame.file_path_short or '?'}:{frame.line_no}"


def hotspots(root: Any, top: int = 10) -> tuple[list[Hotspot], list[Hotspot]]:
    """Top functions by own time (all code), and fhirfus functions by inclusive time.

    Own time is a frame's time minus its children's, summed over every call path. Inclusive time
    counts a function once per path (a recursive call inside itself adds nothing), so it reads as
    "time spent under this function"; the entry point itself and its callers are left out.
    """
    own: dict[tuple[str, str], float] = {}
    inclusive: dict[tuple[str, str], float] = {}

    def visit(frame: Any, stack: frozenset[tuple[str, str]]) -> None:
        key = _frame_key(frame)
        children = frame.children
        if not frame.is_synthetic:
            # pyinstrument books own time on synthetic "[self]" children: they stay in it.
            own[key] = own.get(key, 0.0) + frame.time - sum(c.time for c in children if not c.is_synthetic)
            if key not in stack and "fhirfus" in (frame.file_path or "") and frame.function != "process":
                inclusive[key] = inclusive.get(key, 0.0) + frame.time
        for child in children:
            visit(child, stack | {key})

    visit(root, frozenset())
    ranked_own = sorted(own.items(), key=lambda kv: kv[1], reverse=True)[:top]
    ranked_inclusive = sorted(inclusive.items(), key=lambda kv: kv[1], reverse=True)[:top]
    return ([Hotspot(f, w, s) for (f, w), s in ranked_own], [Hotspot(f, w, s) for (f, w), s in ranked_inclusive])


def profile_bundles(url: str, batch: Sequence[Bundle]) -> Profile:
    """``bundles.process`` in this process under pyinstrument, after one unprofiled warm-up
    Bundle (first-use caches: validators, search-parameter tables, the connection pool)."""
    from pyinstrument import Profiler

    engine = make_engine(url)
    try:
        context = bundles.Context(Store(engine), SERVER, "http://bench.local/fhir")
        bundles.process(context, orjson.loads(batch[0].body))
        documents = [orjson.loads(b.body) for b in batch[1:]]  # parsed beforehand: not part of the profile
        profiler = Profiler(interval=0.0005)
        start = time.perf_counter()
        profiler.start()
        for document in documents:
            bundles.process(context, document)
        session = profiler.stop()
        seconds = time.perf_counter() - start
    finally:
        engine.dispose()
    root = session.root_frame()
    own, inclusive = hotspots(root) if root is not None else ([], [])
    return Profile(len(documents), seconds, own, inclusive)


# --- reporting -------------------------------------------------------------------------------


@dataclass
class Outcome:
    sizes: Sizes
    clients: int
    workers: int = 1
    http: Any = None
    raw: Any = None
    big: BigBundle | None = None
    profile: Profile | None = None
    responses_per_bundle: float = 0.0
    bundle_bytes: float = 0.0
    seconds: float = 0.0


def _mib(kib: int | None) -> str:
    return "—" if kib is None else f"{kib / 1024:,.0f} MiB"


def throughput_report(outcome: Outcome) -> Any:
    http, raw = outcome.http, outcome.raw
    posted = http.count * BUNDLE_ENTRIES
    derived = http.count * outcome.responses_per_bundle * SCORES_PER_RESPONSE
    seconds = http.seconds
    report = bench.Report(
        f"Ingest over HTTP: transaction Bundles of {BUNDLE_ENTRIES} entries, {outcome.clients} keep-alive clients, "
        f"{outcome.workers} server worker process{'es' if outcome.workers > 1 else ''}",
        ["measurement", "n", "resources/s", "bundle p50 ms", "bundle p95 ms", "ratio", "server CPU ms/res",
         "PG CPU ms/res", "CPU busy"])

    def cpu_cells(measured: Any, per: float) -> list[str]:
        cpu = measured.cpu
        return [bench._fmt(None if cpu is None or cpu.server_s is None else cpu.server_s * 1000 / per, 3),
                bench._fmt(None if cpu is None or cpu.database_s is None else cpu.database_s * 1000 / per, 3),
                "—" if cpu is None or cpu.machine_busy is None else f"{100 * cpu.machine_busy:.0f} %"]

    rate = posted / seconds if seconds else 0.0
    label = "POST /fhir transaction, posted entries" + (f" ({http.errors} errors)" if http.errors else "")
    report.rows += [
        [label, f"{posted:,}", bench._fmt(rate, 0), bench._fmt(http.percentile_ms(0.5), 1),
         bench._fmt(http.percentile_ms(0.95), 1), f"{_pct(rate, raw.rate)} of raw", *cpu_cells(http, posted)],
        ["  + derived TWSTRS score Observations", f"{derived:,.0f}", bench._fmt(derived / seconds if seconds else 0, 0),
         "", "", "", "", "", ""],
        ["  = stored resources", f"{posted + derived:,.0f}",
         bench._fmt((posted + derived) / seconds if seconds else 0, 0), "", "", "", *cpu_cells(http, posted + derived)],
        [raw.label + " (baseline)", f"{raw.count:,}", bench._fmt(raw.rate, 0), "", "", "baseline",
         *cpu_cells(raw, raw.count)],
    ]
    report.notes += [
        f"{http.count} Bundles of {BUNDLE_ENTRIES} POST entries (~{outcome.bundle_bytes / 1024:.0f} KiB each): per "
        f"patient a Patient, Condition, MRgFUS Procedure, TWSTRS QuestionnaireResponse and "
        f"{GROUP_SIZE - 4} Observations, linked by urn:uuid; every entry validated, indexed and "
        "versioned; the response carries every resource (Prefer default: representation).",
        f"derived: {SCORES_PER_RESPONSE} score Observations per TWSTRS response, written by the server in the same "
        "transaction; the aim counts posted entries only.",
        f"raw: the same documents, references resolved, into `resources` only (no history, no index, no "
        f"validation, no HTTP), SQLAlchemy Core, {RAW_ROWS_PER_TX} rows per transaction, {outcome.clients} threads.",
        MEDPLUM_REFERENCE + ".",
    ]
    if http.errors:
        report.notes.append(f"first error: {http.first_error}")
    return report


def _pct(part: float, whole: float) -> str:
    return "—" if whole <= 0 else f"{100 * part / whole:.0f} %"


def big_report(big: BigBundle) -> Any:
    report = bench.Report(f"One transaction Bundle of {big.entries:,} entries", ["measurement", "value"])
    report.rows += [
        ["request body", f"{big.request_bytes / 2**20:,.1f} MiB"],
        ["response body", f"{big.response_bytes / 2**20:,.1f} MiB"],
        ["time (POST to complete response)", f"{big.seconds:,.2f} s"],
        ["posted entries per second", f"{big.entries / big.seconds:,.0f}" if big.seconds else "—"],
        ["derived score Observations", f"{big.derived:,}"],
        ["server RSS before", _mib(big.rss_before_kib)],
        ["server RSS peak", _mib(big.peak_kib)],
        ["peak − before", _mib(None if big.peak_kib is None or big.rss_before_kib is None
                               else big.peak_kib - big.rss_before_kib)],
        ["server RSS after", _mib(big.rss_after_kib)],
    ]
    report.notes.append(f"peak from {big.peak_source}; RSS of the server process (uvicorn, one worker).")
    if big.body_limit is not None:
        report.notes.append(f"the server's body limit was raised to {big.body_limit / 2**20:.0f} MiB for this "
                            f"Bundle (default {DEFAULT_MAX_BODY_BYTES / 2**20:.0f} MiB).")
    if big.problem:
        report.notes.append(f"ERROR: {big.problem}")
    return report


def profile_reports(profile: Profile) -> list[Any]:
    title = (f"pyinstrument: bundles.process on {profile.bundles} Bundles of {BUNDLE_ENTRIES} entries "
             f"({profile.seconds:.2f} s, in-process, PostgreSQL)")
    own = bench.Report(f"{title}: top 10 by own time", ["function", "where", "own ms", "share"])
    own.rows += [[h.function, h.where, f"{h.seconds * 1000:,.0f}", _pct(h.seconds, profile.seconds)]
                 for h in profile.own]
    inclusive = bench.Report("… and the top 10 fhirfus functions by inclusive time (nested: shares overlap)",
                             ["function", "where", "total ms", "share"])
    inclusive.rows += [[h.function, h.where, f"{h.seconds * 1000:,.0f}", _pct(h.seconds, profile.seconds)]
                       for h in profile.inclusive]
    return [own, inclusive]


def aims_report(outcome: Outcome) -> Any:
    http = outcome.http
    rate = http.count * BUNDLE_ENTRIES / http.seconds if http.seconds else 0.0
    report = bench.Report("Aims (issues 4 and 21: PostgreSQL, 4 clients, 2 cores)", ["aim", "measured", "met"])
    report.rows.append([f"HTTP ingest ≥ {AIM_RESOURCES_PER_S:,.0f} posted resources/s",
                        f"{rate:,.0f}/s ({_pct(rate, outcome.raw.rate)} of raw {outcome.raw.rate:,.0f}/s)",
                        bench._mark(rate >= AIM_RESOURCES_PER_S and not http.errors)])
    if outcome.big:
        big = outcome.big
        peak = None if big.peak_kib is None or big.rss_before_kib is None else big.peak_kib - big.rss_before_kib
        report.rows.append([f"peak memory of a {big.entries:,}-entry Bundle (reported, no aim)",
                            f"+{_mib(peak)} over {_mib(big.rss_before_kib)}, {big.seconds:.1f} s", "—"])
    return report


def publish(reports: list[Any], outcome: Outcome, output: Path, load_note: str) -> None:
    console.print()
    for report in reports:
        console.print(report.rich())
        for note in report.notes:
            console.print(f"  [dim]{escape(note)}[/dim]")
        console.print()
    console.print(f"[dim]{escape(load_note)}[/dim]")
    header = [
        "## `make bench`: ingest of transaction Bundles (tools/bench_ingest.py)", "",
        f"- {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {bench._git_revision()}, {os.cpu_count()} cores "
        "(server, PostgreSQL and load generator on the same machine)",
        f"- {load_note}",
        f"- total run time {outcome.seconds:.0f} s",
    ]
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("a", encoding="utf-8") as handle:
        handle.write("\n" + "\n".join(header) + "\n\n" + "\n".join(r.markdown() for r in reports))
    console.print(f"appended to {output}")


# --- entry point -----------------------------------------------------------------------------


def run(sizes: Sizes, clients: int, output: Path, big_entries: int, workers: int) -> int:
    started = time.perf_counter()
    start_load = os.getloadavg()
    outcome = Outcome(sizes, clients, workers)
    loads: list[float] = []
    load_conformance()  # as the server does at start (the profile runs in this process)
    freeze_start_up_heap()
    rng = random.Random(SEED)
    console.rule(f"bench_ingest: {sizes.bundles} Bundles of {BUNDLE_ENTRIES} entries, {clients} clients, one of "
                 f"{big_entries:,}; load average {start_load[0]:.2f}")
    warm = make_bundles(sizes.warmup, BUNDLE_ENTRIES, rng, 0)
    measured = make_bundles(sizes.bundles, BUNDLE_ENTRIES, rng, 1_000_000)
    big = make_bundle(rng, big_entries, 5_000_000)
    profiled = make_bundles(sizes.profiled + 1, BUNDLE_ENTRIES, rng, 6_000_000)
    outcome.responses_per_bundle = sum(b.responses for b in measured) / len(measured)
    outcome.bundle_bytes = sum(len(b.body) for b in measured) / len(measured)
    batches = raw_rows(measured)
    try:
        with bench.postgres_databases(3) as (server_url, raw_url, profile_url), \
                tempfile.TemporaryDirectory(prefix="fhirfus-bench-") as tmp:
            for url in (server_url, raw_url, profile_url):
                bench.migrated(url)
            body_limit = 2 * len(big.body) if len(big.body) > DEFAULT_MAX_BODY_BYTES else None
            with ingest_server(server_url, Path(tmp), body_limit, workers) as server:
                probe = bench.Probe(server.pid, bench._pg_name(server_url))  # CPU of all its workers
                warmed = post_bundles(server.base, warm, clients, "warm-up", probe)
                if warmed.errors == warmed.count:
                    raise bench.BenchError(f"every warm-up Bundle failed, e.g. {warmed.first_error}")
                loads.append(os.getloadavg()[0])
                outcome.http = post_bundles(server.base, measured, clients, "POST transaction", probe)
                rate = outcome.http.count * BUNDLE_ENTRIES / outcome.http.seconds
                console.print(f"  HTTP: {outcome.http.count} Bundles in {outcome.http.seconds:.1f} s = {rate:,.0f} "
                              f"posted resources/s, p95 {outcome.http.percentile_ms(0.95):.0f} ms per Bundle"
                              + (f", [red]{outcome.http.errors} errors[/red]" if outcome.http.errors else ""))
            loads.append(os.getloadavg()[0])
            # The memory of one Bundle is the memory of the one process that handles it.
            with ingest_server(server_url, Path(tmp), body_limit, 1) as server:
                outcome.big = post_big_bundle(server.base, server.pid, big)
                outcome.big.body_limit = body_limit
                console.print(f"  one Bundle of {big_entries:,}: {outcome.big.seconds:.1f} s, RSS "
                              f"{_mib(outcome.big.rss_before_kib)} → peak {_mib(outcome.big.peak_kib)}")
            loads.append(os.getloadavg()[0])
            outcome.raw = raw_baseline(raw_url, batches, clients, bench.Probe(None, bench._pg_name(raw_url)))
            console.print(f"  raw baseline: {outcome.raw.rate:,.0f} rows/s")
            loads.append(os.getloadavg()[0])
            outcome.profile = profile_bundles(profile_url, profiled)
            console.print(f"  profiled {outcome.profile.bundles} Bundles in {outcome.profile.seconds:.2f} s")
    except bench.BenchError as exc:
        console.print(f"[red]bench_ingest failed: {escape(str(exc))}[/red]")
        return 1
    outcome.seconds = time.perf_counter() - started
    reports = [throughput_report(outcome)]
    if outcome.big:
        reports.append(big_report(outcome.big))
    reports += [*profile_reports(outcome.profile), aims_report(outcome)]
    load_note = (f"load average at start {start_load[0]:.2f} / {start_load[1]:.2f} / {start_load[2]:.2f} (1/5/15 min), "
                 f"between phases {', '.join(f'{v:.2f}' for v in loads)}, at the end {os.getloadavg()[0]:.2f} on "
                 f"{os.cpu_count()} cores: the machine is shared, figures move with it")
    publish(reports, outcome, output, load_note)
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK.bundles} Bundles, {QUICK.profiled} profiled (a smoke run, noisier figures)")
    parser.add_argument("--bundles", type=int, help=f"measured Bundles (default {FULL.bundles})")
    parser.add_argument("--big-entries", type=int, default=BIG_BUNDLE_ENTRIES,
                        help=f"entries of the one big Bundle (default {BIG_BUNDLE_ENTRIES:,})")
    parser.add_argument("--clients", type=int, default=4, help="concurrent keep-alive clients (default 4)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help=f"server worker processes for the throughput phase (default {DEFAULT_WORKERS}: the cores)")
    parser.add_argument("--output", type=Path, default=bench.RESULTS, help="Markdown file to append to")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.workers < 1:
        parser.error("--clients and --workers must be at least 1")
    if args.bundles is not None and args.bundles < 1:
        parser.error("--bundles must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    bench._terminate_on_sigterm()
    base = QUICK if args.quick else FULL
    sizes = Sizes(bundles=args.bundles or base.bundles, warmup=base.warmup, profiled=base.profiled)
    try:
        return run(sizes, args.clients, args.output, args.big_entries, args.workers)
    except KeyboardInterrupt:
        console.print("[red]interrupted; server stopped and databases dropped[/red]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
