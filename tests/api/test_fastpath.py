"""The fast paths (reads by id, plain creates) answer every error exactly as the router's exception
handlers do: same status, same OperationOutcome, same headers, for every FhirError, every database
error either driver raises, and the framework's own. What only the outermost handler answers (an
unexpected error, a logged 500) goes on to it."""

from __future__ import annotations

import asyncio

import httpx
import psycopg
import pytest
import sqlalchemy.exc
from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request

from fhirfus import errors
from fhirfus.api.errors import install_error_handlers
from fhirfus.api.fastpath import Bypass


def _fhir_errors() -> list[Exception]:
    kinds = [k for k in vars(errors).values() if isinstance(k, type) and issubclass(k, errors.FhirError)]
    return [kind(f"{kind.__name__} happened", "Patient.name", headers={"X-Kind": kind.__name__}) for kind in kinds]


def _database_errors() -> list[Exception]:
    driver = [psycopg.errors.QueryCanceled("cancelled"), psycopg.errors.DeadlockDetected("deadlock"),
              psycopg.errors.SerializationFailure("serialization"), psycopg.OperationalError("connection lost")]
    wrapped = [sqlalchemy.exc.OperationalError("SELECT 1", {}, error) for error in driver]
    return [*driver, *wrapped]


ANSWERED = [*_fhir_errors(), *_database_errors(), HTTPException(404), HTTPException(405, "no")]


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise/{index}")
    def raising(index: int) -> None:
        raise ANSWERED[index]

    return app


def _routed(app: FastAPI, index: int) -> httpx.Response:
    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
            return await client.get(f"/raise/{index}")
    return asyncio.run(get())


def _request(path: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
                    "headers": [(b"host", b"testserver")], "scheme": "http", "server": ("testserver", 80)})


def test_the_family_reaches_every_kind_of_answer() -> None:
    """The comparison below can fail: it covers 4xx outcomes, 409 and 503 answers with Retry-After."""
    app = _app()
    statuses = {_routed(app, i).status_code for i in range(len(ANSWERED))}
    assert {400, 404, 409, 503} <= statuses and len(_fhir_errors()) >= 15


@pytest.mark.parametrize("index", range(len(ANSWERED)), ids=[type(e).__name__ for e in ANSWERED])
def test_a_fast_path_answers_an_error_as_the_router_does(index: int) -> None:
    app = _app()
    routed = _routed(app, index)
    fast = asyncio.run(Bypass(app).error_response(_request(f"/raise/{index}"), ANSWERED[index]))
    assert fast.status_code == routed.status_code
    assert fast.body == routed.content
    assert {k: v for k, v in fast.headers.items() if k != "content-length"} == \
        {k: v for k, v in routed.headers.items() if k != "content-length"}


def test_an_unexpected_error_goes_on_to_the_outermost_handler() -> None:
    error = RuntimeError("bug")
    with pytest.raises(RuntimeError):
        asyncio.run(Bypass(_app()).error_response(_request("/x"), error))
