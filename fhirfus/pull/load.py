"""Pulled NDJSON into the hub through the transaction path, under the site's label.

Each chunk of an output file is one transaction Bundle of ``PUT Type/{site}-{id}``: a chunk
loaded twice leaves the same data (a rerun after a crash converges). Deletions (the manifest's
``deleted`` files) are conditional deletes on ``_id`` by a caller confined to the site, so an id
the hub never had, or one of another site, is left alone. Files are loaded in dependency order
(as ``fhirfus load`` does); references are not required to resolve, because an incremental pull
brings an Observation whose Patient came in an earlier pull, and ``_type`` can leave targets out.

Definitions are not a site's data: a source server exports its own implementation guide, code
systems and profiles with everything else, and the hub has its own. Resources of the types in
``DEFINITIONAL`` are skipped unless the pull names them in ``--type``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection

from fhirfus.auth.access import SERVER, Access
from fhirfus.auth.scopes import Grant
from fhirfus.errors import FhirError, InvalidRequest
from fhirfus.fhir.validation import parse_json
from fhirfus.interactions import bundles
from fhirfus.pull.namespace import hub_id, to_hub
from fhirfus.store.repository import Store

CHUNK_SIZE = 1000
#: Types referenced by others come first (as in ``fhirfus load``).
LOAD_ORDER = ("Organization", "Location", "Practitioner", "PractitionerRole", "Medication", "Device",
              "Patient", "Group", "Encounter")


#: Conformance, terminology and knowledge artifacts (what a server publishes about itself).
DEFINITIONAL = frozenset({
    "CapabilityStatement", "CodeSystem", "CompartmentDefinition", "ConceptMap", "GraphDefinition",
    "ImplementationGuide", "Library", "Measure", "MessageDefinition", "NamingSystem", "OperationDefinition",
    "PlanDefinition", "Questionnaire", "SearchParameter", "StructureDefinition", "StructureMap",
    "TerminologyCapabilities", "ValueSet",
})


@dataclass
class Loaded:
    written: int = 0
    deleted: int = 0
    skipped: int = 0


def site_caller(site: str) -> Access:
    """The site's own view of the hub: deletes reach its resources and nothing else."""
    return Access(f"pull:{site}", "site", site, (Grant("*", "cruds"),))


def load_order(res_type: str) -> tuple[int, str]:
    return (LOAD_ORDER.index(res_type) if res_type in LOAD_ORDER else len(LOAD_ORDER), res_type)


def _lines(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield number, parse_json(line)
                except InvalidRequest as exc:
                    raise InvalidRequest(f"{path.name} line {number}: {exc.message}", f"line {number}") from exc


def skipped_type(res_type: str, asked: tuple[str, ...]) -> bool:
    """Whether resources of ``res_type`` stay at the source (definitions not asked for by name)."""
    return res_type in DEFINITIONAL and res_type not in asked


def load_output(store: Store, path: Path, site: str, source_base: str, loaded: Loaded,
                chunk_size: int = CHUNK_SIZE, *, hub_base: str = "") -> None:
    """One output file: PUT by hub id, a transaction per chunk (``hub_base``: the hub's own base URL)."""
    context = bundles.Context(store, SERVER, "", integrity=False)
    entries: list[dict] = []
    for number, resource in _lines(path):
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str) \
                or not isinstance(resource.get("id"), str):
            raise InvalidRequest(f"{path.name} line {number}: not a FHIR resource with an id", f"line {number}")
        try:
            resource = to_hub(resource, site, source_base, hub_base)
        except InvalidRequest as exc:
            raise InvalidRequest(f"{path.name} line {number}: {exc.message}", f"line {number}") from exc
        url = f"{resource['resourceType']}/{resource['id']}"
        entries.append({"resource": resource, "request": {"method": "PUT", "url": url}})
        if len(entries) == chunk_size:
            _commit(context, entries, path, loaded)
            entries = []
    if entries:
        _commit(context, entries, path, loaded)


def load_deleted(store: Store, path: Path, site: str, loaded: Loaded, chunk_size: int = CHUNK_SIZE) -> None:
    """One ``deleted`` file: its transaction Bundles' DELETE entries, as conditional deletes by id."""
    context = bundles.Context(store, site_caller(site), "", integrity=False)
    entries: list[dict] = []
    for number, bundle in _lines(path):
        listed = bundle.get("entry") if isinstance(bundle, dict) else None
        for entry in listed if isinstance(listed, list) else [None]:
            request = entry.get("request") if isinstance(entry, dict) else None
            url = request.get("url") if isinstance(request, dict) else None
            method = request.get("method") if isinstance(request, dict) else None
            if not isinstance(url, str) or method != "DELETE" or url.count("/") != 1:
                raise InvalidRequest(f"{path.name} line {number}: a deleted entry must be DELETE Type/id",
                                     f"line {number}")
            res_type, res_id = url.split("/")
            entries.append({"request": {"method": "DELETE", "url": f"{res_type}?_id={hub_id(site, res_id)}"}})
            if len(entries) == chunk_size:
                _commit(context, entries, path, loaded, deleting=True)
                entries = []
    if entries:
        _commit(context, entries, path, loaded, deleting=True)


def _commit(context: bundles.Context, entries: list[dict], path: Path, loaded: Loaded, *,
            deleting: bool = False) -> None:
    try:
        bundles.process(context, {"resourceType": "Bundle", "type": "transaction", "entry": entries}, "minimal")
    except FhirError as exc:
        raise InvalidRequest(f"{path.name}: {exc.message}", issues=exc.issues) from exc
    if deleting:
        loaded.deleted += len(entries)
    else:
        loaded.written += len(entries)


def commit_provenance(store: Store, provenance: dict, finish: Callable[[Connection], None]) -> None:
    """The pull's Provenance, and ``finish`` (the watermark) in the same transaction."""
    context = bundles.Context(store, SERVER, "", integrity=False)
    url = f"Provenance/{provenance['id']}"
    bundles.process(context, {"resourceType": "Bundle", "type": "transaction",
                              "entry": [{"resource": provenance, "request": {"method": "PUT", "url": url}}]},
                    "minimal", before_commit=finish)
