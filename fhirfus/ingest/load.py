"""``fhirfus load``: Bundle JSON and NDJSON files into the store, chunk by chunk, resumable.

Every chunk becomes one transaction Bundle processed by the normal Bundle path (validation,
reference resolution, bulk inserts); the chunk's entry in ``load_journal`` is written in that
same transaction, so after an interruption a rerun skips exactly what is already stored and
redoes the chunk that was cut off. NDJSON resources keep their ids (PUT), so references between
files stay valid; files are loaded in dependency order (organisations before patients before
encounters …) because conditional references like ``Organization?identifier=…`` must resolve.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, insert, select

from fhirfus.auth.access import SERVER
from fhirfus.db.tables import load_journal
from fhirfus.errors import FhirError, InvalidRequest
from fhirfus.fhir.validation import parse_json
from fhirfus.interactions import bundles
from fhirfus.store.repository import Store

CHUNK_SIZE = 1000
#: Types referenced by others come first (unknown types keep their name order after these).
LOAD_ORDER = ("Organization", "Location", "Practitioner", "PractitionerRole", "Medication", "Device",
              "Patient", "Group", "Encounter")


@dataclass(frozen=True)
class Chunk:
    source: str
    index: int
    bundle: dict
    size: int


@dataclass
class LoadReport:
    loaded: int = 0
    skipped: int = 0
    chunks: int = 0


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ordered(paths: list[Path]) -> list[Path]:
    """NDJSON files named ``Type.*.ndjson`` in dependency order; other files keep their order."""
    def rank(path: Path) -> tuple[int, str]:
        kind = path.name.split(".")[0]
        return (LOAD_ORDER.index(kind) if kind in LOAD_ORDER else len(LOAD_ORDER), path.name)
    return sorted(paths, key=rank)


def _entry(resource: Any, where: str) -> dict:
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        raise InvalidRequest(f"{where}: not a FHIR resource", where)
    if resource.get("id"):
        url = f"{resource['resourceType']}/{resource['id']}"
        return {"resource": resource, "request": {"method": "PUT", "url": url}}
    return {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}


def ndjson_chunks(path: Path, source: str, size: int = CHUNK_SIZE) -> Iterator[Chunk]:
    """Stream an NDJSON file as transaction Bundles of ``size`` resources (never all in memory)."""
    entries: list[dict] = []
    index = 0
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                resource = parse_json(line)  # malformed JSON, or a NUL no database column can hold
            except InvalidRequest as exc:
                raise InvalidRequest(f"{path.name} line {number}: {exc.message}", f"line {number}") from exc
            entries.append(_entry(resource, f"{path.name} line {number}"))
            if len(entries) == size:
                yield Chunk(source, index, {"resourceType": "Bundle", "type": "transaction", "entry": entries}, size)
                entries, index = [], index + 1
    if entries:
        yield Chunk(source, index, {"resourceType": "Bundle", "type": "transaction", "entry": entries}, len(entries))


def json_chunks(path: Path, source: str) -> Iterator[Chunk]:
    """A Bundle file is one chunk (its references may cross entries); a resource file, one entry."""
    document = parse_json(path.read_bytes())
    if not isinstance(document, dict):
        raise InvalidRequest(f"{path.name}: not a FHIR resource", path.name)
    if document.get("resourceType") == "Bundle" and document.get("type") in ("transaction", "batch"):
        bundle = {**document, "type": "transaction"}
    elif document.get("resourceType") == "Bundle":
        raw = document.get("entry", [])
        entries = [_entry(e.get("resource") if isinstance(e, dict) else None, f"{path.name} entry {i}")
                   for i, e in enumerate(raw if isinstance(raw, list) else [None])]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    else:
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [_entry(document, path.name)]}
    yield Chunk(source, 0, bundle, len(bundle.get("entry", [])))


def chunks_of(path: Path, size: int = CHUNK_SIZE) -> Iterator[Chunk]:
    source = file_digest(path)
    if path.suffix in (".ndjson", ".jsonl"):
        yield from ndjson_chunks(path, f"{source[:48]}:{size}", size)
    else:
        yield from json_chunks(path, source)


def _done(store: Store, source: str) -> set[int]:
    with store.reading() as conn:
        return set(conn.execute(select(load_journal.c.chunk).where(load_journal.c.source == source)).scalars())


def load_files(
    store: Store, paths: list[Path], base_url: str = "", progress: Callable[[int], None] | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> LoadReport:
    """Load every file; chunks already journaled are skipped."""
    report = LoadReport()
    context = bundles.Context(store, SERVER, base_url, integrity=False)  # chunks of a whole; see references
    for path in ordered(paths):
        done: set[int] | None = None
        for chunk in chunks_of(path, chunk_size):
            if done is None:
                done = _done(store, chunk.source)
            if chunk.index in done:
                report.skipped += chunk.size
            else:
                _load_chunk(context, chunk, path)
                report.loaded += chunk.size
                report.chunks += 1
            if progress:
                progress(chunk.size)
    return report


def _load_chunk(context: bundles.Context, chunk: Chunk, path: Path) -> None:
    def journal(conn: Connection) -> None:
        conn.execute(insert(load_journal).values(
            source=chunk.source, chunk=chunk.index, resources=chunk.size, loaded_at=datetime.now(UTC)))

    try:
        bundles.process(context, chunk.bundle, "minimal", before_commit=journal)
    except FhirError as exc:
        raise InvalidRequest(f"{path.name} chunk {chunk.index}: {exc.message}", issues=exc.issues) from exc


def count_resources(paths: list[Path]) -> int:
    """Resources to load (NDJSON lines, Bundle entries), for the progress bar."""
    total = 0
    for path in paths:
        if path.suffix in (".ndjson", ".jsonl"):
            with path.open("rb") as handle:
                total += sum(1 for line in handle if line.strip())
        else:
            document = parse_json(path.read_bytes())
            entries = document.get("entry") if isinstance(document, dict) else None
            bundle = isinstance(document, dict) and document.get("resourceType") == "Bundle"
            total += len(entries) if bundle and isinstance(entries, list) else 1
    return total
