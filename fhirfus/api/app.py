"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI

from fhirfus import __version__
from fhirfus.api import resources, system
from fhirfus.api.errors import install_error_handlers
from fhirfus.config import Settings, get_settings
from fhirfus.operations.conformance import load_search_parameters
from fhirfus.store.engine import make_engine
from fhirfus.store.repository import Store


def create_app(settings: Settings | None = None, store: Store | None = None) -> FastAPI:
    """Build the app; tests pass their own settings and store, ``fhirfus serve`` uses the environment."""
    settings = settings or get_settings()
    store = store or Store(make_engine(settings.database_url))
    app = FastAPI(
        title="fhirfus",
        version=__version__,
        description="FHIR R4 server for MRgFUS cervical-dystonia research",
        redirect_slashes=False,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    load_search_parameters()
    app.state.settings = settings
    app.state.store = store
    install_error_handlers(app)
    app.include_router(system.router)
    app.include_router(resources.router)
    return app
