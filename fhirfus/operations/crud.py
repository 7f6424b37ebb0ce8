"""Instance and type interactions: create, read, vread, update, patch, delete, $validate.

Each write validates at the edge (``fhirfus.fhir.validation``) before any SQL runs, then does all
its SQL in one transaction, so a rejected request leaves the database unchanged.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import jsonpatch

from fhirfus.fhir.errors import Gone, InvalidRequest, InvalidResource, Issue, NotFound, PreconditionFailed
from fhirfus.fhir.validation import require_known_type, require_valid_id, resource_issues, validate_resource
from fhirfus.operations import conditional
from fhirfus.store import repository
from fhirfus.store.repository import Store, Stored


@dataclass(frozen=True)
class WriteResult:
    stored: Stored
    created: bool


def new_id() -> str:
    return str(uuid.uuid4())


def create(store: Store, res_type: str, body: Any, if_none_exist: str | None = None) -> WriteResult:
    """POST [type]: server-assigned id; with If-None-Exist, return the existing match instead."""
    require_known_type(res_type)
    resource = validate_resource(body, res_type)
    with store.writing() as conn:
        if if_none_exist:
            matches = conditional.matching_ids(conn, res_type, if_none_exist)
            if len(matches) > 1:
                raise PreconditionFailed(
                    f"If-None-Exist criteria '{if_none_exist}' match {len(matches)} resources", "If-None-Exist"
                )
            if matches:
                existing = repository.current(conn, res_type, matches[0])
                assert existing is not None
                return WriteResult(existing, created=False)
        return WriteResult(repository.create(conn, res_type, new_id(), resource), created=True)


def read(store: Store, res_type: str, res_id: str) -> Stored:
    require_known_type(res_type)
    with store.reading() as conn:
        stored = repository.current(conn, res_type, res_id)
    if stored is None:
        raise NotFound(f"{res_type}/{res_id} not found", f"{res_type}.id")
    if stored.deleted:
        raise Gone(f"{res_type}/{res_id} was deleted (version {stored.version})", f"{res_type}.id")
    return stored


def vread(store: Store, res_type: str, res_id: str, version_id: str) -> Stored:
    require_known_type(res_type)
    if not version_id.isdigit():
        raise NotFound(f"{res_type}/{res_id} has no version '{version_id}'", "meta.versionId")
    with store.reading() as conn:
        stored = repository.version(conn, res_type, res_id, int(version_id))
    if stored is None:
        raise NotFound(f"{res_type}/{res_id} has no version {version_id}", "meta.versionId")
    if stored.deleted:
        raise Gone(f"{res_type}/{res_id} version {version_id} is a deletion", "meta.versionId")
    return stored


def _check_update_body(res_type: str, res_id: str, body: Any) -> dict:
    require_valid_id(res_id, res_type)
    if isinstance(body, dict) and body.get("resourceType") == res_type:
        body_id = body.get("id")
        if body_id is None:
            body = {**body, "id": res_id}
        elif body_id != res_id:
            raise InvalidRequest(
                f"Resource id '{body_id}' does not match the id '{res_id}' of the URL", f"{res_type}.id"
            )
    return validate_resource(body, res_type)


def update(store: Store, res_type: str, res_id: str, body: Any, if_match: int | None = None) -> WriteResult:
    """PUT [type]/[id]: new version, or update-as-create when the id is free (or deleted)."""
    require_known_type(res_type)
    resource = _check_update_body(res_type, res_id, body)
    with store.writing() as conn:
        previous = repository.current(conn, res_type, res_id, for_update=True)
        _check_if_match(res_type, res_id, previous, if_match)
        if previous is None:
            return WriteResult(repository.create(conn, res_type, res_id, resource, "PUT"), created=True)
        return WriteResult(repository.replace(conn, previous, resource, "PUT"), created=previous.deleted)


def _check_if_match(res_type: str, res_id: str, previous: Stored | None, if_match: int | None) -> None:
    if if_match is None:
        return
    current_version = None if previous is None or previous.deleted else previous.version
    if current_version != if_match:
        found = "it does not exist" if current_version is None else f"the current version is {current_version}"
        raise PreconditionFailed(
            f"If-Match version {if_match} does not match {res_type}/{res_id}: {found}", "If-Match"
        )


def patch(store: Store, res_type: str, res_id: str, operations: Any, if_match: int | None = None) -> WriteResult:
    """PATCH [type]/[id] with a JSON Patch document; the result is validated like an update."""
    require_known_type(res_type)
    if not isinstance(operations, list):
        raise InvalidRequest("A JSON Patch body must be an array of operations", "PATCH")
    with store.writing() as conn:
        previous = repository.current(conn, res_type, res_id, for_update=True)
        if previous is None:
            raise NotFound(f"{res_type}/{res_id} not found", f"{res_type}.id")
        if previous.deleted:
            raise Gone(f"{res_type}/{res_id} was deleted", f"{res_type}.id")
        _check_if_match(res_type, res_id, previous, if_match)
        patched = _apply_patch(previous.content or {}, operations)
        if patched.get("resourceType") != res_type or patched.get("id") != res_id:
            raise InvalidRequest("A patch must not change resourceType or id", f"{res_type}.id")
        resource = validate_resource(patched, res_type)
        return WriteResult(repository.replace(conn, previous, resource, "PATCH"), created=False)


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


def delete(store: Store, res_type: str, res_id: str) -> Stored | None:
    """DELETE [type]/[id]: a tombstone version; deleting a deleted resource changes nothing."""
    require_known_type(res_type)
    with store.writing() as conn:
        previous = repository.current(conn, res_type, res_id, for_update=True)
        if previous is None:
            raise NotFound(f"{res_type}/{res_id} not found", f"{res_type}.id")
        if previous.deleted:
            return None
        return repository.tombstone(conn, previous)


def validate(store: Store, res_type: str, body: Any, res_id: str | None = None, mode: str | None = None) -> list[Issue]:
    """$validate: the issues a create (or an update of ``res_id``) would raise, nothing written."""
    require_known_type(res_type)
    if mode == "delete":
        if res_id is None:
            raise InvalidRequest("mode=delete needs an instance-level $validate", "mode")
        read(store, res_type, res_id)
        return []
    if isinstance(body, dict) and body.get("resourceType") == "Parameters" and res_type != "Parameters":
        body = _resource_parameter(body)
    if res_id is not None:
        try:
            _check_update_body(res_type, res_id, body)
        except InvalidResource as exc:
            return exc.issues
        except InvalidRequest as exc:
            return exc.issues
        return []
    return resource_issues(body, res_type)


def _resource_parameter(parameters: dict) -> Any:
    for parameter in parameters.get("parameter") or []:
        if isinstance(parameter, dict) and parameter.get("name") == "resource":
            return parameter.get("resource")
    raise InvalidRequest("Parameters must carry the resource to validate in 'resource'", "Parameters.parameter")
