"""``GET /fhir/_pulls``: the hub's stored pull definitions with their status and last error, for
admins (JSON, not a FHIR resource; ``fhirfus pull list`` shows the same). Key paths and client
ids are shown: an admin is who configures them; nobody else gets past the role check."""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from fhirfus.api.http import caller
from fhirfus.pull.definitions import all_definitions

router = APIRouter(prefix="/fhir")


@router.get("/_pulls")
async def pulls(request: Request) -> Response:
    caller(request).require_role("admin")
    found = await run_in_threadpool(all_definitions, request.app.state.store)
    return Response(orjson.dumps({"pulls": [d.to_json() for d in found]}), media_type="application/json")
