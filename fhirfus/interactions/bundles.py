"""Batch and transaction Bundles (POST [base]), following the R4 processing rules.

Transaction: every entry is validated before any SQL runs; then, in ONE database transaction,
entries are processed in the order DELETE → POST → PUT/PATCH → GET/HEAD, with ``urn:uuid:``
fullUrls and conditional references (``Patient?identifier=…``) resolved and rewritten everywhere
in the Bundle. Any failure rolls everything back and answers 4xx with an OperationOutcome whose
expression names the entry. Batch: each entry runs in its own transaction and succeeds or fails
on its own; failures become ``response.outcome`` entries.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
from sqlalchemy import Connection

from fhirfus.auth.access import Access
from fhirfus.domain import rules, subscription
from fhirfus.domain.derived import derived_keys, to_create_with
from fhirfus.errors import FhirError, Forbidden, InvalidRequest, Issue, NotFound
from fhirfus.fhir.outcome import operation_outcome
from fhirfus.fhir.references import rewrite_references
from fhirfus.fhir.validation import (
    require_known_type,
    require_storable,
    require_valid_id,
    resource_issues,
    served_types,
    shown,
)
from fhirfus.fhirpath.invariants import invariant_errors
from fhirfus.interactions import conditional, crud, history, references, search
from fhirfus.interactions.crud import WriteResult
from fhirfus.interactions.preconditions import etag, parse_version_tag
from fhirfus.interactions.writes import write_transaction
from fhirfus.store import repository
from fhirfus.store.repository import Store, Stored, format_instant

#: Resources per multi-row INSERT when a transaction creates many (a 10,000-entry Bundle).
CREATE_CHUNK = 1000
ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content"}


@dataclass
class Entry:
    """One Bundle entry, parsed: what to do, to which type/id, with which resource."""

    index: int
    method: str
    url: str
    res_type: str | None
    res_id: str | None
    query: str
    full_url: str | None
    resource: Any
    if_none_exist: str | None = None
    if_match: int | None = None
    #: A batch entry that could not be parsed: answered with this error, nothing else done.
    error: FhirError | None = None
    existing: bool = False  # a POST whose ifNoneExist matched: nothing is created
    server_id: bool = False  # a conditional PUT that matched nothing: it creates, the server names it
    #: ``Type/id`` of every reference of the resource, when each named an entry of the Bundle by its
    #: fullUrl (None: some reference is to be looked up by the integrity check)
    targets: set[str] | None = None

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"


@dataclass(frozen=True)
class Context:
    """What every entry needs: the store, the caller, the base URL and paging defaults for GET entries."""

    store: Store
    caller: Access
    base: str
    default_count: int = 50
    max_count: int = 1000
    #: References of what a Bundle writes must resolve, what it deletes must not be referenced
    #: (``fhirfus.interactions.references``); off for loads of whole exports in chunks.
    integrity: bool = True


def _fail(entry: Entry, error: FhirError) -> FhirError:
    """Re-anchor an error's expressions at the entry (``Patient.gender`` → ``Bundle.entry[3].resource.gender``);
    an error already anchored passes unchanged (a Bundle entry's ``Bundle.type`` would anchor twice)."""
    if all(issue.diagnostics.startswith(f"{entry.where}: ") for issue in error.issues):
        return error
    issues = []
    for issue in error.issues:
        expressions = tuple(_anchor(entry, e) for e in issue.expression) or (entry.where,)
        issues.append(Issue(f"{entry.where}: {issue.diagnostics}", issue.code, issue.severity, expressions))
    rebased = type(error)(issues[0].diagnostics, issues=issues, headers=error.headers)
    return rebased


def _anchor(entry: Entry, expression: str) -> str:
    if entry.res_type and (expression == entry.res_type or expression.startswith(entry.res_type + ".")):
        return f"{entry.where}.resource{expression[len(entry.res_type):]}"
    if expression == "resourceType":
        return f"{entry.where}.resource.resourceType"
    return f"{entry.where}.{expression}" if not expression.startswith("Bundle.") else expression


def parse_bundle(body: Any) -> tuple[str, list[Entry]]:
    """The Bundle's kind and entries. A malformed entry fails a transaction whole; in a batch it
    becomes an entry carrying its error, answered on its own (``Entry.error``)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise InvalidRequest("POST to the base URL expects a batch or transaction Bundle", "resourceType")
    kind = body.get("type")
    if kind not in ("batch", "transaction"):
        raise InvalidRequest(f"Bundle.type must be batch or transaction, got {shown(kind)}", "Bundle.type")
    raw_entries = body.get("entry", [])
    if not isinstance(raw_entries, list):
        raise InvalidRequest("Bundle.entry must be an array", "Bundle.entry")
    entries = []
    for index, raw in enumerate(raw_entries):
        try:
            entries.append(_parse_entry(index, raw))
        except FhirError as exc:
            if kind == "transaction":
                raise
            entries.append(Entry(index, "GET", "", None, None, "", None, None, error=exc))
    if kind == "transaction":
        _require_unique_full_urls(entries)
    return kind, entries


def _require_unique_full_urls(entries: list[Entry]) -> None:
    """In a transaction a fullUrl names one entry: references to it are rewritten to that entry's id."""
    seen: dict[str, int] = {}
    for entry in entries:
        if entry.full_url is None:
            continue
        if entry.full_url in seen:
            raise InvalidRequest(f"{entry.where}.fullUrl {shown(entry.full_url)} is also the fullUrl of "
                                 f"entry {seen[entry.full_url]}", f"{entry.where}.fullUrl")
        seen[entry.full_url] = entry.index


#: The shapes of ``request.url`` (path segments after the type) each method accepts.
_SHAPES = {
    "POST": ((),),
    "PUT": (("id",),),
    "PATCH": (("id",),),
    "DELETE": (("id",),),
    "GET": ((), ("id",), ("id", "_history"), ("id", "_history", "vid"), ("_history",)),
    "HEAD": ((), ("id",), ("id", "_history"), ("id", "_history", "vid"), ("_history",)),
}
#: Methods whose ``request.url`` may be ``Type?criteria`` alone (conditional update and delete).
_CONDITIONAL = frozenset({"PUT", "DELETE"})
#: Methods whose ``request.url`` may be the type alone.
_TYPE_LEVEL = frozenset(method for method, shapes in _SHAPES.items() if () in shapes)


def _parse_entry(index: int, raw: Any) -> Entry:
    """One entry checked whole before anything runs: every element the processing reads has the
    type and form it needs (the R4 id rule for ids), so a malformed entry is a 4xx naming the
    element, never an error inside the processing."""
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{where} must be an object", where)
    full_url = raw.get("fullUrl")
    if full_url is not None and (not isinstance(full_url, str) or not full_url or not _printable(full_url)):
        raise InvalidRequest(f"{where}.fullUrl must be a non-empty string, got {shown(full_url)}", f"{where}.fullUrl")
    request = raw.get("request")
    if not isinstance(request, dict):
        raise InvalidRequest(f"{where} needs a request", f"{where}.request")
    for name in ("method", "url", "ifNoneExist", "ifMatch", "ifNoneMatch", "ifModifiedSince"):
        value = request.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidRequest(f"{where}.request.{name} must be a string, got {shown(value)}",
                                 f"{where}.request.{name}")
    method = str(request.get("method") or "").upper()
    if method not in ORDER:
        raise InvalidRequest(f"{where}.request.method {shown(request.get('method'))} is not supported",
                             f"{where}.request.method")
    url = request.get("url")
    if not url or not _printable(url):
        raise InvalidRequest(f"{where}.request.url must be a relative URL like 'Patient/1', got {shown(url)}",
                             f"{where}.request.url")
    res_type, res_id, query = _parse_url(where, method, url)
    entry = Entry(index, method, url, res_type, res_id, query, full_url, raw.get("resource"))
    entry.if_none_exist = request.get("ifNoneExist")
    entry.if_match = parse_version_tag(request.get("ifMatch"), f"{where}.request.ifMatch")
    if method in ("POST", "PUT") and not isinstance(entry.resource, dict):
        raise InvalidRequest(f"{where} ({method}) needs a resource", f"{where}.resource")
    if method == "PATCH":
        _patch_operations(entry)
    return entry


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _printable(text: str) -> bool:
    """No control characters (a NUL cannot be stored, and no URL or id holds one)."""
    return _CONTROL.search(text) is None


def _parse_url(where: str, method: str, url: str) -> tuple[str, str | None, str]:
    """``request.url`` → (type, id, query), refused unless it has a shape ``method`` supports."""
    path, _, query = url.partition("?")
    parts = path.strip("/").split("/") if path.strip("/") else []
    expression = f"{where}.request.url"
    if not parts:
        raise InvalidRequest(f"{where}.request.url {shown(url)} names no resource type", expression)
    res_type, rest = parts[0], parts[1:]
    if res_type not in served_types():
        raise NotFound(f"{where}: unknown resource type {shown(res_type)}", expression)
    if not rest and (method in _TYPE_LEVEL or (method in _CONDITIONAL and query)):
        return res_type, None, query  # the common case (every POST) decided without building a shape
    shape = tuple(p if p == "_history" else "vid" if i == 2 else "id" for i, p in enumerate(rest))
    if shape not in _SHAPES[method]:
        raise InvalidRequest(f"{where}.request.url {shown(url)}: a {method} entry supports "
                             f"{_shapes_text(method)}", expression)
    res_id = rest[0] if rest and rest[0] != "_history" else None
    if res_id is not None:
        require_valid_id(res_id, res_type, expression)
    return res_type, res_id, query


def _shapes_text(method: str) -> str:
    shapes = [("[type]/" + "/".join("[id]" if p == "id" else "[vid]" if p == "vid" else p for p in shape)).rstrip("/")
              for shape in _SHAPES[method]]
    if method in _CONDITIONAL:
        shapes.append("[type]?[criteria]")
    return ", ".join(shapes)


def _patch_operations(entry: Entry) -> list | dict:
    """A FHIRPath Patch is the entry's Parameters resource; a JSON Patch travels as a Binary with the
    patch document base64-encoded in ``data`` (the R4 convention): strict base64, a JSON array."""
    expression = f"{entry.where}.resource"
    resource = entry.resource
    if isinstance(resource, dict) and resource.get("resourceType") == "Parameters":
        return resource
    if not isinstance(resource, dict) or resource.get("resourceType") != "Binary":
        raise InvalidRequest(f"{entry.where} (PATCH) needs a JSON Patch as a Binary or a FHIRPath Patch as "
                             "Parameters", expression)
    data = resource.get("data")
    if not isinstance(data, str) or not data:
        raise InvalidRequest(f"{entry.where} (PATCH): Binary.data must hold the base64 JSON Patch",
                             f"{expression}.data")
    try:
        operations = orjson.loads(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise InvalidRequest(f"{entry.where} (PATCH): Binary.data is not base64 of a JSON document: {exc}",
                             f"{expression}.data") from exc
    if not isinstance(operations, list):
        raise InvalidRequest(f"{entry.where} (PATCH): a JSON Patch is an array of operations", f"{expression}.data")
    return operations


def validate_entries(caller: Access, entries: list[Entry]) -> None:
    """Every POST/PUT resource is checked before the transaction starts (nothing half-written)."""
    for entry in entries:
        if entry.method in ("POST", "PUT") and entry.res_type:
            probe = entry.resource
            issues = resource_issues(probe, entry.res_type) or invariant_errors(probe)
            if issues:
                raise _fail(entry, FhirError(issues[0].diagnostics, issues=issues))
            try:
                require_storable(probe)
                rules.enforce(probe)
                if entry.res_type == "Subscription":
                    probe = subscription.accept(probe, lambda searched: caller.allows(searched, "s"))
                entry.resource = caller.labelled(probe)
            except FhirError as exc:
                raise _fail(entry, exc) from exc


# --- reference resolution -------------------------------------------------------------------


def assign_identities(conn: Connection, caller: Access, entries: list[Entry], base: str) -> dict[str, str]:
    """fullUrl → ``Type/id`` for every entry that creates or updates (conditional creates resolved
    among the resources the caller may see)."""
    mapping: dict[str, str] = {}
    targets: dict[str, int] = {}
    for entry in entries:
        if entry.method not in ("POST", "PUT") or entry.res_type is None:
            continue
        if entry.method == "POST":
            existing = None
            if entry.if_none_exist:
                matches = conditional.matching_ids(conn, caller, entry.res_type, entry.if_none_exist, base,
                                                   may_create=True)
                if len(matches) > 1:
                    raise _fail(entry, InvalidRequest(
                        f"ifNoneExist '{entry.if_none_exist}' matches {len(matches)} resources", "request.ifNoneExist"))
                existing = matches[0] if matches else None
            entry.res_id = existing or str(uuid.uuid4())
            entry.existing = existing is not None
        elif entry.res_id is None:
            matches = conditional.matching_ids(conn, caller, entry.res_type, entry.query, base, may_create=True)
            if len(matches) > 1:
                raise _fail(entry, InvalidRequest(f"'{entry.url}' matches {len(matches)} resources", "request.url"))
            body_id = entry.resource.get("id")
            entry.server_id = not matches and not body_id
            entry.res_id = matches[0] if matches else (body_id or str(uuid.uuid4()))
        key = f"{entry.res_type}/{entry.res_id}"
        if key in targets:
            raise _fail(entry, InvalidRequest(
                f"Entries {targets[key]} and {entry.index} both resolve to {key}", "request.url"))
        targets[key] = entry.index
        if entry.full_url:
            mapping[entry.full_url] = key
    return mapping


def resolve_references(
    conn: Connection, caller: Access, entries: list[Entry], mapping: dict[str, str], base: str,
) -> None:
    """Rewrite ``urn:uuid:`` / fullUrl and conditional references in every resource of the Bundle."""
    cache: dict[str, str] = {}

    def resolve_for(entry: Entry) -> Callable[[str], str | None]:
        entry.targets = set()

        def resolve(reference: str) -> str | None:
            if reference in mapping:
                if entry.targets is not None:
                    entry.targets.add(mapping[reference])
                return mapping[reference]
            entry.targets = None
            if reference.startswith(("urn:uuid:", "urn:oid:")):
                raise _fail(entry, InvalidRequest(f"Reference '{reference}' names no entry of this Bundle", "resource"))
            if "?" in reference:
                if reference not in cache:
                    cache[reference] = _conditional_reference(conn, caller, entry, reference, base)
                return cache[reference]
            if reference.startswith(base + "/"):
                return reference[len(base) + 1:]
            return None
        return resolve

    for entry in entries:
        if isinstance(entry.resource, dict) and entry.method in ("POST", "PUT"):
            rewrite_references(entry.resource, resolve_for(entry))


def _conditional_reference(conn: Connection, caller: Access, entry: Entry, reference: str, base: str) -> str:
    """The one resource the caller may see that a ``Type?criteria`` reference names."""
    res_type, _, criteria = reference.partition("?")
    try:
        require_known_type(res_type)
        matches = conditional.matching_ids(conn, caller, res_type, criteria, base)
    except Forbidden as exc:
        raise _fail(entry, exc) from exc
    except FhirError as exc:
        raise _fail(entry, InvalidRequest(f"Conditional reference '{reference}': {exc.message}", "resource")) from exc
    if len(matches) != 1:
        found = "no resource" if not matches else f"{len(matches)} resources"
        raise _fail(entry, InvalidRequest(
            f"Conditional reference '{reference}' matches {found} (exactly one needed)", "resource"))
    return f"{res_type}/{matches[0]}"


# --- processing ----------------------------------------------------------------------------


def _write_response(result: WriteResult | Stored, created_status: int = 201) -> dict:
    stored = result.stored if isinstance(result, WriteResult) else result
    created = result.created if isinstance(result, WriteResult) else False
    status = created_status if created else 200
    return {
        "status": STATUS_TEXT[status],
        "location": f"{stored.res_type}/{stored.res_id}/_history/{stored.version}",
        "etag": etag(stored.version),
        "lastModified": format_instant(stored.last_updated),
        "_resource": stored.content,
    }


def run_entry(conn: Connection, entry: Entry, ctx: Context) -> dict:
    """Execute one entry inside ``conn``; returns its ``response`` (``_resource`` carried aside)."""
    assert entry.res_type is not None or entry.method in ("GET", "HEAD")
    caller = ctx.caller
    if entry.method == "DELETE":
        if entry.res_id is not None:
            stored = crud.delete_in(conn, caller, entry.res_type, entry.res_id)  # type: ignore[arg-type]
        else:
            stored = crud.conditional_delete_in(conn, caller, entry.res_type, entry.query, ctx.base)  # type: ignore[arg-type]
        return {"status": STATUS_TEXT[204 if stored is None else 200],
                **({"etag": etag(stored.version)} if stored else {})}
    if entry.method == "POST":
        if entry.existing:
            return _write_response(crud.read_in(conn, caller, entry.res_type, entry.res_id))  # type: ignore[arg-type]
        resource = {k: v for k, v in entry.resource.items() if k != "id"}
        return _write_response(crud.create_in(conn, caller, entry.res_type, resource, res_id=entry.res_id))  # type: ignore[arg-type]
    if entry.method == "PUT" and entry.server_id and entry.if_match is None:
        resource = {k: v for k, v in entry.resource.items() if k != "id"}
        return _write_response(crud.create_in(conn, caller, entry.res_type, resource, res_id=entry.res_id))  # type: ignore[arg-type]
    if entry.method == "PUT":
        resource = crud.check_update_body(caller, entry.res_type, entry.res_id, entry.resource)  # type: ignore[arg-type]
        return _write_response(crud.update_in(conn, caller, entry.res_type, entry.res_id, resource, entry.if_match))  # type: ignore[arg-type]
    if entry.method == "PATCH":
        if entry.res_id is None:
            raise InvalidRequest("Conditional PATCH in a Bundle is not supported", "request.url")
        operations = _patch_operations(entry)
        return _write_response(crud.patch_in(conn, caller, entry.res_type, entry.res_id, operations, entry.if_match))  # type: ignore[arg-type]
    return _read_entry(conn, entry, ctx)


def _read_entry(conn: Connection, entry: Entry, ctx: Context) -> dict:
    """GET/HEAD: read, vread, search or history, answered from the same transaction's view."""
    path = entry.url.partition("?")[0].strip("/").split("/")
    params = parse_qsl(entry.query, keep_blank_values=True)
    if entry.res_type is None:
        raise InvalidRequest("GET entries need a resource type in request.url", "request.url")
    if entry.res_id is not None and len(path) == 2:
        stored = crud.read_in(conn, ctx.caller, entry.res_type, entry.res_id)
        return {"status": "200 OK", "etag": etag(stored.version), "lastModified": format_instant(stored.last_updated),
                "_resource": stored.content}
    if entry.res_id is not None and len(path) == 4 and path[2] == "_history":
        stored = crud.vread_in(conn, ctx.caller, entry.res_type, entry.res_id, path[3])
        return {"status": "200 OK", "etag": etag(stored.version), "_resource": stored.content}
    if len(path) == 1:
        bundle = search.search_bundle(ctx.store, ctx.caller, ctx.base, entry.res_type, params,
                                      default_count=ctx.default_count, max_count=ctx.max_count)
        return {"status": "200 OK", "_resource": bundle}
    if path[-1] == "_history":
        bundle = history.history_bundle(ctx.store, ctx.caller, ctx.base, dict(params), default_count=ctx.default_count,
                                        max_count=ctx.max_count, res_type=entry.res_type, res_id=entry.res_id)
        return {"status": "200 OK", "_resource": bundle}
    raise InvalidRequest(f"Unsupported request.url '{entry.url}'", "request.url")


def _response_entry(entry: Entry, response: dict, return_: str) -> dict:
    resource = response.pop("_resource", None)
    result: dict = {}
    if entry.full_url and not entry.full_url.startswith("urn:"):
        result["fullUrl"] = entry.full_url
    if resource is not None and return_ == "representation" and entry.method != "HEAD":
        result["resource"] = resource
    result["response"] = response
    return result


def process(
    ctx: Context, body: Any, return_: str = "representation",
    before_commit: Callable[[Connection], None] | None = None,
) -> dict:
    """Process a batch or transaction Bundle and build the response Bundle."""
    kind, entries = parse_bundle(body)  # entries hold the parsed body itself: it is rewritten in place
    responses = _transaction(ctx, entries, before_commit) if kind == "transaction" else _batch(ctx, entries)
    return {
        "resourceType": "Bundle",
        "type": f"{kind}-response",
        "entry": [_response_entry(e, responses[e.index], return_) for e in entries],
    }


def _transaction(
    ctx: Context, entries: list[Entry], before_commit: Callable[[Connection], None] | None = None
) -> dict[int, dict]:
    """All entries in one database transaction; ``before_commit`` joins it (e.g. a load journal)."""
    validate_entries(ctx.caller, entries)
    responses: dict[int, dict] = {}
    with write_transaction(ctx.store, ctx.caller) as conn:
        mapping = assign_identities(conn, ctx.caller, entries, ctx.base)
        resolve_references(conn, ctx.caller, entries, mapping, ctx.base)
        repository.lock_current(conn, [(e.res_type, e.res_id) for e in entries
                                       if e.method in ("PUT", "PATCH", "DELETE") and e.res_type and e.res_id])
        ordered = sorted(entries, key=lambda e: (ORDER[e.method], e.index))
        for entry in (e for e in ordered if e.method == "DELETE"):
            responses[entry.index] = _run(conn, entry, ctx)
        bulk = _bulk_creatable(conn, ctx.caller, entries)
        created, live = _create_all(conn, ctx.caller, bulk)
        responses.update(created)
        for entry in (e for e in ordered if e.method != "DELETE" and e.index not in responses):
            responses[entry.index] = _run(conn, entry, ctx)
        if ctx.integrity:
            _check_integrity(conn, ctx, entries, responses, live)
        if before_commit is not None:
            before_commit(conn)
    return responses


def _check_integrity(
    conn: Connection, ctx: Context, entries: list[Entry], responses: dict[int, dict],
    live: frozenset[tuple[str, str]] = frozenset(),
) -> None:
    """References of what ``entries`` wrote resolve; what they deleted nobody refers to (at the end
    of the transaction, so entries may refer to each other in any order). ``live``: (type, id) this
    transaction created where the caller sees them, which no lookup needs to confirm."""
    created = {f"{res_type}/{res_id}" for res_type, res_id in live}
    written = [(e, responses[e.index]["_resource"]) for e in entries
               if e.method in ("POST", "PUT", "PATCH") and isinstance(responses[e.index].get("_resource"), dict)
               and (e.targets is None or not e.targets <= created)]  # else nothing to look up or walk
    missing = references.missing_targets(conn, ctx.caller, written, ctx.base, live)
    if missing:
        raise _fail(missing[0][0], references.dangling([m for m in missing if m[0] is missing[0][0]]))
    for entry in entries:
        if entry.method == "DELETE" and entry.res_type and entry.res_id and responses[entry.index].get("etag"):
            try:
                references.check_deleted(conn, ctx.caller, [(entry.res_type, entry.res_id)], ctx.base)
            except FhirError as exc:
                raise _fail(entry, exc) from exc


def _run(conn: Connection, entry: Entry, ctx: Context) -> dict:
    try:
        return run_entry(conn, entry, ctx)
    except FhirError as exc:
        raise _fail(entry, exc) from exc


def _bulk_creatable(conn: Connection, caller: Access, entries: list[Entry]) -> list[Entry]:
    """Entries that simply create: POSTs without a match, and PUTs to ids never used before (when
    the caller may choose ids; a site client's PUTs take the one-by-one path, which refuses ids
    its site does not own).

    A PUT of a QuestionnaireResponse whose score Observations' ids are already used (a tombstone
    of an earlier response with that id, or another entry of this Bundle) is left to the
    one-by-one path, which updates the scores in place (``derived.after_write``).
    """
    creates = [e for e in entries if e.method == "POST" and not e.existing]
    puts = [e for e in entries if e.method == "PUT" and e.if_match is None and e.res_id is not None
            and (caller.chooses_ids or e.server_id)]
    scores = {e.index: derived_keys(e.res_type, e.res_id) for e in puts}  # type: ignore[arg-type]
    wanted = [(e.res_type, e.res_id) for e in puts] + [key for keys in scores.values() for key in keys]
    taken = repository.taken(conn, wanted)  # type: ignore[arg-type]
    in_bundle = {(e.res_type, e.res_id) for e in entries if e.res_id is not None}
    for entry in puts:
        if (entry.res_type, entry.res_id) in taken:
            continue
        if any(key in taken or key in in_bundle for key in scores.get(entry.index, ())):
            continue
        body_id = entry.resource.get("id")
        if body_id is not None and body_id != entry.res_id:
            raise _fail(entry, InvalidRequest(
                f"Resource id '{body_id}' does not match the id '{entry.res_id}' of request.url", f"{entry.res_type}.id"))
        creates.append(entry)
    return creates


def _create_all(
    conn: Connection, caller: Access, creates: list[Entry],
) -> tuple[dict[int, dict], frozenset[tuple[str, str]]]:
    """Creating entries of a transaction in one bulk insert (after DELETEs, before updates): their
    responses, and the (type, id) created that the caller sees. Those stay live to the end of the
    transaction (its DELETEs ran before, and no later entry may name an id an earlier one took),
    so references to them need no lookup."""
    for entry in creates:
        try:
            caller.require(entry.res_type, "c")  # type: ignore[arg-type]
        except FhirError as exc:
            raise _fail(entry, exc) from exc
    items = [
        repository.NewResource(e.res_type, e.res_id, {k: v for k, v in e.resource.items() if k != "id"}, e.method)  # type: ignore[arg-type]
        for e in creates
    ]
    items += to_create_with(items)  # TWSTRS score Observations, in the same bulk inserts
    stored: list[Stored] = []
    for start in range(0, len(items), CREATE_CHUNK):  # bounded statement size and serialised JSON
        stored += repository.create_many(conn, items[start:start + CREATE_CHUNK])
    responses = {e.index: _write_response(WriteResult(s, created=True))
                 for e, s in zip(creates, stored[:len(creates)], strict=True)}
    return responses, frozenset((s.res_type, s.res_id) for s in stored if caller.visibility.sees(s.site))


def _batch(ctx: Context, entries: list[Entry]) -> dict[int, dict]:
    """Each entry on its own: a failure is reported in its response and touches nothing else."""
    responses: dict[int, dict] = {}
    for entry in sorted(entries, key=lambda e: (ORDER[e.method], e.index)):
        try:
            if entry.error is not None:
                raise entry.error
            validate_entries(ctx.caller, [entry])
            with write_transaction(ctx.store, ctx.caller, method=entry.method, path="/fhir/" + entry.url.lstrip("/")) as conn:
                mapping = assign_identities(conn, ctx.caller, [entry], ctx.base)
                resolve_references(conn, ctx.caller, [entry], mapping, ctx.base)
                responses[entry.index] = run_entry(conn, entry, ctx)
                if ctx.integrity:
                    _check_integrity(conn, ctx, [entry], responses)
        except FhirError as exc:
            failed = exc if exc is entry.error else _fail(entry, exc)
            responses[entry.index] = {
                "status": f"{exc.status}", "outcome": operation_outcome(failed.issues),
            }
    return responses

