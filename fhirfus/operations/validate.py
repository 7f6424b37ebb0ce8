"""``$validate`` at system, type and instance level (https://hl7.org/fhir/R4/resource-operation-validate.html).

Why: a client checks a resource before sending it, and learns everything a write would say plus
what a write lets pass (warnings, information). The resource comes as the body or as the
``resource`` parameter of a ``Parameters`` body; ``mode`` (``create``, ``update``, ``delete``) and
``profile`` come from the query string or the ``Parameters``. The answer is always an
OperationOutcome with 200 (a clean one says so in an ``information`` issue); what makes the
request itself unusable (no resource, an unknown mode) is a 400. The caller needs the permission
of the write checked (create, update or delete), as for the write itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhirfus.auth.access import Access
from fhirfus.domain import profiles
from fhirfus.errors import InvalidRequest, Issue
from fhirfus.interactions import crud
from fhirfus.store.repository import Store

MODES = ("create", "update", "delete")


@dataclass(frozen=True, slots=True)
class Request:
    """What to validate, how and against what."""

    resource: Any
    mode: str | None = None
    profile: str | None = None


def _parameter_value(parameter: dict) -> Any:
    return next((v for k, v in parameter.items() if k.startswith("value")), None)


def parse(body: Any, res_type: str | None, mode: str | None, profile: str | None) -> Request:
    """The resource, mode and profile of a request (``Parameters`` values win over the query)."""
    if isinstance(body, dict) and body.get("resourceType") == "Parameters" and res_type != "Parameters":
        resource: Any = None
        items = body.get("parameter")
        for parameter in items if isinstance(items, list) else []:
            if not isinstance(parameter, dict):
                continue
            name = parameter.get("name")
            if name == "resource":
                resource = parameter.get("resource")
            elif name == "mode":
                mode = _parameter_value(parameter)
            elif name == "profile":
                profile = _parameter_value(parameter)
        if resource is None and mode != "delete":
            raise InvalidRequest("Parameters must carry the resource to validate in 'resource'", "Parameters.parameter")
        body = resource
    if mode is not None and mode not in MODES:
        raise InvalidRequest(f"Unknown mode {mode!r}: one of {', '.join(MODES)}", "mode")
    if profile is not None and not isinstance(profile, str):
        raise InvalidRequest("profile must be a canonical URL", "profile")
    return Request(body, mode, profile)


def validate(
    store: Store, caller: Access, res_type: str | None, request: Request, res_id: str | None = None,
) -> list[Issue]:
    """Every issue (errors, warnings, information) the write ``request.mode`` would meet."""
    resource, mode = request.resource, request.mode
    if res_type is None:  # system level: the resource says what it is
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise InvalidRequest("$validate needs a resource with a resourceType", "resource")
        res_type = resource["resourceType"]
    if mode == "update" and res_id is None:
        res_id = resource.get("id") if isinstance(resource, dict) else None
        if not isinstance(res_id, str):
            raise InvalidRequest("mode=update needs the id of the resource (in the URL or the resource)", "mode")
    if mode == "create" and isinstance(resource, dict) and res_id is not None:
        res_id = None  # validated as a create, whatever the URL
    issues = crud.validate(store, caller, res_type, resource, res_id, mode)
    if request.profile and mode != "delete" and not _has_errors(issues) and isinstance(resource, dict):
        issues = sorted(issues + profiles.claimed_issues(resource, request.profile), key=_rank)  # errors first
    return issues


def _rank(issue: Issue) -> int:
    return ("fatal", "error", "warning", "information").index(issue.severity) if issue.severity in (
        "fatal", "error", "warning", "information") else 4


def _has_errors(issues: list[Issue]) -> bool:
    return any(i.severity in ("error", "fatal") for i in issues)
