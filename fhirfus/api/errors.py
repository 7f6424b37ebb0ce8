"""The one place where errors become OperationOutcome responses.

Typed ``FhirError``s carry status and issues; framework errors (unknown route, wrong method,
malformed path values) are mapped to the same shape; anything unexpected is a 500 whose body
says nothing about the internals (the traceback goes to the server log only).
"""

from __future__ import annotations

import logging

import psycopg
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from fhirfus.api.negotiation import safe_rendering_for
from fhirfus.errors import FhirError, Issue
from fhirfus.fhir.outcome import operation_outcome
from fhirfus.fhir.xml import xml_safe

log = logging.getLogger("fhirfus.api")

_HTTP_ISSUE_CODES = {404: "not-found", 405: "not-supported", 406: "not-supported", 413: "too-costly", 415: "not-supported"}


def outcome_response(request: Request, status: int, issues: list[Issue], headers: dict[str, str] | None = None) -> Response:
    rendering = safe_rendering_for(request)
    outcome = operation_outcome(issues)
    return Response(
        rendering.dumps(xml_safe(outcome) if rendering.xml else outcome),  # diagnostics may echo any input
        status_code=status,
        media_type=rendering.content_type,
        headers=headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FhirError)
    async def _fhir_error(request: Request, exc: FhirError) -> Response:
        return outcome_response(request, exc.status, exc.issues, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_ISSUE_CODES.get(exc.status_code, "processing")
        message = str(exc.detail) if exc.detail else "Request failed"
        if exc.status_code == 404:
            message = f"No FHIR interaction at {request.method} {request.url.path}"
        return outcome_response(request, exc.status_code, [Issue(message, code)], getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        issues = [
            Issue(f"Invalid {'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg')}", "invalid", "error",
                  (".".join(str(p) for p in err.get("loc", ())),))
            for err in exc.errors()
        ]
        return outcome_response(request, 400, issues)

    @app.exception_handler(OperationalError)
    async def _database(request: Request, exc: OperationalError) -> Response:
        return _database_response(request, exc.orig, exc)

    @app.exception_handler(psycopg.OperationalError)
    async def _async_database(request: Request, exc: psycopg.OperationalError) -> Response:
        return _database_response(request, exc, exc)  # the async read pool's driver, unwrapped by SQLAlchemy

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("Unhandled error on %s %s", request.method, request.url.path)
        return outcome_response(request, 500, [Issue("Internal server error", "exception", "fatal")])


def _database_response(request: Request, error: BaseException | None, logged: BaseException) -> Response:
    """A database error as the client may act on it: retry a rolled-back conflict, narrow a request
    the statement time limit cancelled, wait out an unavailable database."""
    kind = type(error).__name__
    if kind in ("DeadlockDetected", "SerializationFailure"):  # rolled back: nothing written
        issue = Issue("The request met a concurrent write to the same resources and was rolled back; retry it",
                      "conflict")
        return outcome_response(request, 409, [issue], {"Retry-After": "1"})
    if kind == "QueryCanceled":  # the statement time limit (FHIRFUS_STATEMENT_TIMEOUT_MS)
        issue = Issue("The request took longer than the server allows; narrow it (for a search: more selective "
                      "parameters, a smaller _count) or retry later", "too-costly")
        return outcome_response(request, 503, [issue], {"Retry-After": "5"})
    log.error("Database error on %s %s", request.method, request.url.path, exc_info=logged)
    return outcome_response(request, 503, [Issue("The database is unavailable; retry later", "transient")],
                            {"Retry-After": "5"})
