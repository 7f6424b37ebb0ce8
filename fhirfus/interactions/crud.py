"""Instance and type interactions: create, read, vread, update, patch, delete, $validate.

Each interaction has a connection-level core (``*_in``) that Bundles reuse inside their own
transaction, and a store-level function that validates at the edge (``fhirfus.fhir.validation``)
before any SQL runs and then runs the core in one transaction, so a rejected request leaves the
database unchanged.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import jsonpatch
from sqlalchemy import Connection

from fhirfus.auth.access import Access
from fhirfus.domain import rules, subscription
from fhirfus.domain.derived import after_write
from fhirfus.errors import (
    BusinessRuleViolation,
    Conflict,
    Gone,
    InvalidRequest,
    InvalidResource,
    Issue,
    NotFound,
    PreconditionFailed,
)
from fhirfus.fhir.validation import (
    parameter_list,
    parse_version_id,
    require_known_type,
    require_storable,
    require_valid_id,
    resource_issues,
    validate_resource,
)
from fhirfus.fhirpath import patch as fhirpath_patch
from fhirfus.fhirpath.invariants import invariant_errors, invariant_issues
from fhirfus.interactions import binary, conditional, references
from fhirfus.interactions.writes import write_transaction
from fhirfus.store import repository
from fhirfus.store.repository import Store, Stored


@dataclass(frozen=True)
class WriteResult:
    stored: Stored
    created: bool


def new_id() -> str:
    return str(uuid.uuid4())


def accept(caller: Access, body: Any, res_type: str) -> dict:
    """Edge validation of a write: base FHIR (400) then the fhirfus domain rules (422).

    A site client's writes are labelled with its site (and may not carry another site's label).
    """
    resource = validate_resource(body, res_type)
    require_storable(resource)
    if broken := invariant_errors(resource):
        raise InvalidResource(broken[0].diagnostics, issues=broken)
    rules.enforce(resource)
    if res_type == "Subscription":
        resource = subscription.accept(resource, lambda searched: caller.allows(searched, "s"))
    return caller.labelled(resource)


def _not_found(res_type: str, res_id: str) -> NotFound:
    """The one answer for an id that was never used and for one the caller may not see."""
    return NotFound(f"{res_type}/{res_id} not found", f"{res_type}.id")


# --- connection-level cores ------------------------------------------------------------------


def create_in(
    conn: Connection, caller: Access, res_type: str, resource: dict, if_none_exist: str | None = None, *,
    res_id: str | None = None, base_url: str = "",
) -> WriteResult:
    """Create (``resource`` already accepted); with ``if_none_exist``, an existing match the caller
    may see wins."""
    caller.require(res_type, "c")
    if if_none_exist:
        matches = conditional.matching_ids(conn, caller, res_type, if_none_exist, base_url, may_create=True)
        if len(matches) > 1:
            raise PreconditionFailed(
                f"If-None-Exist criteria '{if_none_exist}' match {len(matches)} resources", "If-None-Exist"
            )
        if matches:
            existing = repository.current(conn, caller.visibility, res_type, matches[0])
            assert existing is not None
            return WriteResult(existing, created=False)
    stored = repository.create(conn, res_type, res_id or new_id(), resource)
    after_write(conn, stored)
    return WriteResult(stored, created=True)


def read_in(conn: Connection, caller: Access, res_type: str, res_id: str) -> Stored:
    caller.require(res_type, "r")
    require_valid_id(res_id, res_type)
    stored = repository.current(conn, caller.visibility, res_type, res_id)
    if stored is None:
        raise _not_found(res_type, res_id)
    if stored.deleted:
        raise Gone(f"{res_type}/{res_id} was deleted (version {stored.version})", f"{res_type}.id")
    if res_type == "Binary":
        binary.require_readable(conn, caller, stored)
    return stored


def vread_in(conn: Connection, caller: Access, res_type: str, res_id: str, version_id: str) -> Stored:
    caller.require(res_type, "r")
    require_valid_id(res_id, res_type)
    version = parse_version_id(version_id)
    if repository.current(conn, caller.visibility, res_type, res_id) is None:
        raise _not_found(res_type, res_id)
    stored = repository.version(conn, caller.visibility, res_type, res_id, version)
    if stored is None:
        raise NotFound(f"{res_type}/{res_id} has no version {version_id}", "meta.versionId")
    if stored.deleted:
        raise Gone(f"{res_type}/{res_id} version {version_id} is a deletion", "meta.versionId")
    if res_type == "Binary":
        binary.require_readable(conn, caller, stored)
    return stored


def update_in(
    conn: Connection, caller: Access, res_type: str, res_id: str, resource: dict, if_match: int | None = None,
) -> WriteResult:
    """New version (the current row locked first), or update-as-create when the id is free and the
    caller may choose ids (a site client updates only the ids its site owns)."""
    caller.require(res_type, "u")
    require_valid_id(res_id, res_type)
    previous = repository.current(conn, caller.visibility, res_type, res_id, for_update=True)
    if previous is None and not caller.chooses_ids:
        raise NotFound(f"{res_type}/{res_id} not found (a site client creates with POST or a conditional "
                       "update: the server assigns the id)", f"{res_type}.id")
    _check_if_match(res_type, res_id, previous, if_match)
    if previous is None:
        stored = repository.create(conn, res_type, res_id, resource, "PUT")
        after_write(conn, stored)
        return WriteResult(stored, created=True)
    if not previous.deleted and unchanged(previous.content, resource):
        return WriteResult(previous, created=False)  # no-op update: no new version (as HAPI does)
    stored = repository.replace(conn, previous, resource, "PUT")
    after_write(conn, stored)
    return WriteResult(stored, created=previous.deleted)


def _without_server_meta(content: dict | None) -> dict:
    if not content:
        return {}
    meta = {k: v for k, v in (content.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    stripped = {k: v for k, v in content.items() if k != "meta"}
    if meta:
        stripped["meta"] = meta
    return stripped


def unchanged(stored: dict | None, incoming: dict) -> bool:
    """True when an update would store the same content again (server-owned meta aside)."""
    return _without_server_meta(stored) == _without_server_meta(incoming)


def conditional_update_in(
    conn: Connection, caller: Access, res_type: str, criteria: str, body: Any, if_match: int | None = None,
    base_url: str = "",
) -> WriteResult:
    """PUT [type]?criteria: no match → create, one → update it, several → 412 (matches among what
    the caller may see: another site's resources are not candidates)."""
    caller.require(res_type, "u")
    matches = conditional.matching_ids(conn, caller, res_type, criteria, base_url, may_create=True)
    if len(matches) > 1:
        raise PreconditionFailed(f"Criteria '{criteria}' match {len(matches)} resources", "criteria")
    body_id = body.get("id") if isinstance(body, dict) else None
    if matches:
        if body_id is not None and body_id != matches[0]:
            raise InvalidRequest(
                f"Resource id '{body_id}' differs from the matching resource '{matches[0]}'", f"{res_type}.id"
            )
        resource = check_update_body(caller, res_type, matches[0], body)
        return update_in(conn, caller, res_type, matches[0], resource, if_match)
    if body_id is not None:
        return update_in(conn, caller, res_type, body_id, check_update_body(caller, res_type, body_id, body), if_match)
    return create_in(conn, caller, res_type, accept(caller, body, res_type))


def patch_in(
    conn: Connection, caller: Access, res_type: str, res_id: str, operations: Any, if_match: int | None = None,
) -> WriteResult:
    if not isinstance(operations, list) and not fhirpath_patch.is_fhirpath_patch(operations):
        raise InvalidRequest("A PATCH body is a JSON Patch (an array of operations) or a FHIRPath Patch "
                             "(a Parameters resource)", "PATCH")
    if not isinstance(operations, list):
        validate_resource(operations, "Parameters")  # a valid Parameters resource: what the patch reads has its types
    caller.require(res_type, "u")
    require_valid_id(res_id, res_type)
    previous = repository.current(conn, caller.visibility, res_type, res_id, for_update=True)
    if previous is None:
        raise _not_found(res_type, res_id)
    if previous.deleted:
        raise Gone(f"{res_type}/{res_id} was deleted", f"{res_type}.id")
    _check_if_match(res_type, res_id, previous, if_match)
    if isinstance(operations, list):
        patched = _apply_patch(previous.content or {}, operations)
    else:
        patched = fhirpath_patch.apply(previous.content or {}, operations)
    _require_fixed_by_patch(res_type, previous.content or {}, patched)
    resource = accept(caller, patched, res_type)
    stored = repository.replace(conn, previous, resource, "PATCH")
    after_write(conn, stored)
    return WriteResult(stored, created=False)


#: What a JSON Patch may not change: the identity of the resource and its ``meta`` (versionId and
#: lastUpdated are the server's; tags, profiles and security labels change with a PUT).
_FIXED_BY_PATCH = ("resourceType", "id", "meta")


def _require_fixed_by_patch(res_type: str, before: dict, after: dict) -> None:
    for name in _FIXED_BY_PATCH:
        if before.get(name) != after.get(name):
            expression = "resourceType" if name == "resourceType" else f"{res_type}.{name}"
            raise InvalidRequest(f"A JSON Patch must not change {name}", expression)


def delete_in(conn: Connection, caller: Access, res_type: str, res_id: str) -> Stored | None:
    """A tombstone version; deleting a deleted resource changes nothing (None)."""
    caller.require(res_type, "d")
    require_valid_id(res_id, res_type)
    previous = repository.current(conn, caller.visibility, res_type, res_id, for_update=True)
    if previous is None:
        raise _not_found(res_type, res_id)
    if previous.deleted:
        return None
    stored = repository.tombstone(conn, previous)
    after_write(conn, stored)
    return stored


def conditional_delete_in(
    conn: Connection, caller: Access, res_type: str, criteria: str, base_url: str = "",
) -> Stored | None:
    """DELETE [type]?criteria: no match → nothing, one → delete it, several → 412 (the permission is
    checked first: whether anything matches is an answer too)."""
    caller.require(res_type, "d")
    matches = conditional.matching_ids(conn, caller, res_type, criteria, base_url)
    if len(matches) > 1:
        raise PreconditionFailed(f"Criteria '{criteria}' match {len(matches)} resources", "criteria")
    if not matches:
        return None
    return delete_in(conn, caller, res_type, matches[0])


# --- store-level interactions (one transaction each) -----------------------------------------


def create(
    store: Store, caller: Access, res_type: str, body: Any, if_none_exist: str | None = None, base_url: str = "",
    *, integrity: bool = True,
) -> WriteResult:
    """POST [type]: server-assigned id; with If-None-Exist, return the existing match instead.
    ``integrity``: its local references must resolve (``fhirfus.interactions.references``)."""
    require_known_type(res_type)
    resource = accept(caller, body, res_type)
    with write_transaction(store, caller) as conn:
        check = references.check_along(conn, caller, [resource], base_url) if integrity else None
        result = create_in(conn, caller, res_type, resource, if_none_exist, base_url=base_url)
        if check is not None and result.created:
            check()
        return result


def read(store: Store, caller: Access, res_type: str, res_id: str) -> Stored:
    require_known_type(res_type)
    with store.reading() as conn:
        return read_in(conn, caller, res_type, res_id)


async def read_raw(store: Store, caller: Access, res_type: str, res_id: str) -> Stored:
    """``read`` on the event loop with the content as stored (``Stored.raw``), for a store with
    ``async_reads`` and any type but Binary (whose read checks its ``securityContext``)."""
    require_known_type(res_type)
    caller.require(res_type, "r")
    require_valid_id(res_id, res_type)
    if store.async_reads is None or res_type == "Binary":
        raise ValueError("read_raw needs a store with async reads and a type other than Binary")
    stored = await repository.current_raw(store.async_reads, caller.visibility, res_type, res_id)
    if stored is None:
        raise _not_found(res_type, res_id)
    if stored.deleted:
        raise Gone(f"{res_type}/{res_id} was deleted (version {stored.version})", f"{res_type}.id")
    return stored


async def vread_raw(store: Store, caller: Access, res_type: str, res_id: str, version_id: str) -> Stored:
    """``vread`` on the event loop with the content as stored, under ``read_raw``'s conditions."""
    require_known_type(res_type)
    caller.require(res_type, "r")
    require_valid_id(res_id, res_type)
    version = parse_version_id(version_id)
    if store.async_reads is None or res_type == "Binary":
        raise ValueError("vread_raw needs a store with async reads and a type other than Binary")
    visible, stored = await repository.version_raw(store.async_reads, caller.visibility, res_type, res_id, version)
    if not visible:
        raise _not_found(res_type, res_id)
    if stored is None:
        raise NotFound(f"{res_type}/{res_id} has no version {version_id}", "meta.versionId")
    if stored.deleted:
        raise Gone(f"{res_type}/{res_id} version {version_id} is a deletion", "meta.versionId")
    return stored


def vread(store: Store, caller: Access, res_type: str, res_id: str, version_id: str) -> Stored:
    require_known_type(res_type)
    with store.reading() as conn:
        return vread_in(conn, caller, res_type, res_id, version_id)


def check_update_body(caller: Access, res_type: str, res_id: str, body: Any) -> dict:
    """Validate an update body; its id must be absent (taken from the URL) or equal the URL's."""
    require_valid_id(res_id, res_type)
    if isinstance(body, dict) and body.get("resourceType") == res_type:
        body_id = body.get("id")
        if body_id is None:
            body = {**body, "id": res_id}
        elif body_id != res_id:
            raise InvalidRequest(
                f"Resource id '{body_id}' does not match the id '{res_id}' of the URL", f"{res_type}.id"
            )
    return accept(caller, body, res_type)


def update(
    store: Store, caller: Access, res_type: str, res_id: str, body: Any, if_match: int | None = None,
    base_url: str = "", *, integrity: bool = True,
) -> WriteResult:
    """PUT [type]/[id]: new version, or update-as-create when the id is free (or deleted)."""
    require_known_type(res_type)
    resource = check_update_body(caller, res_type, res_id, body)
    with write_transaction(store, caller) as conn:
        check = references.check_along(conn, caller, [resource], base_url) if integrity else None
        result = update_in(conn, caller, res_type, res_id, resource, if_match)
        if check is not None:
            check()
        return result


def conditional_update(
    store: Store, caller: Access, res_type: str, criteria: str, body: Any, if_match: int | None = None,
    base_url: str = "", *, integrity: bool = True,
) -> WriteResult:
    require_known_type(res_type)
    accept(caller, body, res_type)
    with write_transaction(store, caller) as conn:
        result = conditional_update_in(conn, caller, res_type, criteria, body, if_match, base_url)
        if integrity:
            references.check_written(conn, caller, [result.stored.content or {}], base_url)
        return result


def _check_if_match(res_type: str, res_id: str, previous: Stored | None, if_match: int | None) -> None:
    if if_match is None:
        return
    current_version = None if previous is None or previous.deleted else previous.version
    if current_version != if_match:
        found = "it does not exist" if current_version is None else f"the current version is {current_version}"
        raise PreconditionFailed(
            f"If-Match version {if_match} does not match {res_type}/{res_id}: {found}", "If-Match"
        )


def patch(
    store: Store, caller: Access, res_type: str, res_id: str, operations: Any, if_match: int | None = None,
    base_url: str = "", *, integrity: bool = True,
) -> WriteResult:
    """PATCH [type]/[id] with a JSON Patch document; the result is validated like an update."""
    require_known_type(res_type)
    with write_transaction(store, caller) as conn:
        result = patch_in(conn, caller, res_type, res_id, operations, if_match)
        if integrity:
            references.check_written(conn, caller, [result.stored.content or {}], base_url)
        return result


def _apply_patch(document: dict, operations: list) -> dict:
    for index, operation in enumerate(operations):
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise InvalidRequest(f"JSON Patch operation {index} needs 'op' and 'path'", f"PATCH[{index}]")
    try:
        return jsonpatch.apply_patch(document, operations)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise PreconditionFailed(f"JSON Patch test failed: {exc}", "PATCH") from exc
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, ValueError) as exc:
        raise InvalidRequest(f"JSON Patch could not be applied: {exc}", "PATCH") from exc


def delete(
    store: Store, caller: Access, res_type: str, res_id: str, base_url: str = "", *, integrity: bool = True,
    cascade: bool = False,
) -> tuple[Stored | None, list[str]]:
    """DELETE [type]/[id]; with ``integrity``, 409 while a resource the caller may see refers to it.

    With ``cascade`` (``_cascade=delete``, as HAPI FHIR), the resources that refer to it are deleted
    too, transitively, in the same transaction; returns the deleted one and the ``Type/id`` of those.
    """
    require_known_type(res_type)
    with write_transaction(store, caller) as conn:
        stored = delete_in(conn, caller, res_type, res_id)
        cascaded = _cascade_delete(conn, caller, (res_type, res_id), base_url) if cascade and stored else []
        if integrity and stored is not None:
            references.check_deleted(conn, caller, [(res_type, res_id)], base_url)
        return stored, cascaded


CASCADE_MOST = 1000  # resources one cascading delete may remove; beyond, nothing is deleted (409)


def _cascade_delete(conn: Connection, caller: Access, deleted: tuple[str, str], base_url: str) -> list[str]:
    """Delete, round after round, every live resource (the caller may see) that refers to one deleted
    in the round before; each needs the caller's delete permission on its type."""
    cascaded: list[str] = []
    frontier = [deleted]
    while frontier:
        found = references.referrers(conn, caller, frontier, base_url, CASCADE_MOST + 1 - len(cascaded))
        frontier = list(dict.fromkeys((row[2], row[3]) for row in found))
        if len(cascaded) + len(frontier) > CASCADE_MOST:
            raise Conflict(f"_cascade=delete would delete more than {CASCADE_MOST} resources; nothing was deleted",
                           "_cascade")
        for res_type, res_id in frontier:
            delete_in(conn, caller, res_type, res_id)
            cascaded.append(f"{res_type}/{res_id}")
    return cascaded


def conditional_delete(
    store: Store, caller: Access, res_type: str, criteria: str, base_url: str = "", *, integrity: bool = True,
) -> Stored | None:
    require_known_type(res_type)
    with write_transaction(store, caller) as conn:
        stored = conditional_delete_in(conn, caller, res_type, criteria, base_url)
        if integrity and stored is not None:
            references.check_deleted(conn, caller, [(res_type, stored.res_id)], base_url)
        return stored


def validate(
    store: Store, caller: Access, res_type: str, body: Any, res_id: str | None = None, mode: str | None = None,
) -> list[Issue]:
    """$validate: the issues a create (or an update of ``res_id``) would raise, nothing written.
    The caller needs the permission of the write it checks (create, update or delete)."""
    require_known_type(res_type)
    caller.require(res_type, "d" if mode == "delete" else "c" if res_id is None else "u")
    if mode == "delete":
        if res_id is None:
            raise InvalidRequest("mode=delete needs an instance-level $validate", "mode")
        read(store, caller, res_type, res_id)
        return []
    if isinstance(body, dict) and body.get("resourceType") == "Parameters" and res_type != "Parameters":
        body = _resource_parameter(body)
    if res_id is not None:
        try:
            resource = check_update_body(caller, res_type, res_id, body)
        except (InvalidResource, InvalidRequest, BusinessRuleViolation) as exc:
            return exc.issues
        return _worst_first(resource_issues(resource, res_type, warnings=True) + invariant_issues(resource)
                            + rules.domain_issues(resource))
    issues = resource_issues(body, res_type, warnings=True)
    if not _has_errors(issues):
        issues += invariant_issues(body)
    if _has_errors(issues):
        return _worst_first(issues)
    return _worst_first(issues + rules.domain_issues(body))


def _has_errors(issues: list[Issue]) -> bool:
    return any(issue.severity in ("error", "fatal") for issue in issues)


_SEVERITY_RANK = {"fatal": 0, "error": 1, "warning": 2, "information": 3}


def _worst_first(issues: list[Issue]) -> list[Issue]:
    """Errors before warnings (best-practice warnings are on nearly every resource)."""
    return sorted(issues, key=lambda issue: _SEVERITY_RANK.get(issue.severity, 4))


def _resource_parameter(parameters: dict) -> Any:
    for parameter in parameter_list(parameters):
        if isinstance(parameter, dict) and parameter.get("name") == "resource":
            return parameter.get("resource")
    raise InvalidRequest("Parameters must carry the resource to validate in 'resource'", "Parameters.parameter")
