"""The FastAPI application factory."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from fhirfus import __version__
from fhirfus.api import analysis, auth, bulk, bulk_import, limits, pulls, resources, system, terminology, views
from fhirfus.api.console import pages as console
from fhirfus.api.createpath import FastCreate
from fhirfus.api.errors import install_error_handlers
from fhirfus.api.readpath import FastRead
from fhirfus.api.request_log import RequestLog
from fhirfus.api.searchpath import FastSearch
from fhirfus.auth import people, ratelimit
from fhirfus.auth.audit import AuditWriter
from fhirfus.auth.client_status import ClientStatus
from fhirfus.auth.tokens import TokenService
from fhirfus.db.async_pool import AsyncReadPool
from fhirfus.db.engine import make_engine
from fhirfus.domain.conformance import load_conformance
from fhirfus.domain.publication import publish
from fhirfus.errors import FhirError
from fhirfus.heap import freeze_start_up_heap
from fhirfus.interactions import paging
from fhirfus.process import die_with_supervisor
from fhirfus.pull.schedule import PullScheduler
from fhirfus.settings import Settings, get_settings
from fhirfus.store.repository import Store
from fhirfus.store.statistics import OBSERVER, STATISTICS_TABLES, StatisticsKeeper
from fhirfus.subscriptions.service import Subscriptions


def create_app(settings: Settings | None = None, store: Store | None = None) -> FastAPI:
    """Build the app; tests pass their own settings and store, ``fhirfus serve`` uses the environment."""
    die_with_supervisor()
    settings = settings or get_settings()
    store = store or Store(make_engine(settings.database_url, statement_timeout_ms=settings.statement_timeout_ms))
    app = FastAPI(
        title="fhirfus",
        version=__version__,
        description="FHIR R4 server for MRgFUS cervical-dystonia research",
        redirect_slashes=False,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    try:
        people.provisioning(settings.oidc_auto_provision)  # a wrong value stops the start, not a login
    except FhirError as exc:
        raise SystemExit(exc.message) from exc
    load_conformance()
    app.state.settings = settings
    app.state.store = store
    counts = ratelimit.shared_counts(store, settings.redis_url)
    app.state.rate_limiter = ratelimit.ReconciledLimiter(
        counts, "fhir", settings.rate_limit_per_minute, settings.rate_limit_sync_ms / 1000)
    app.state.token_address_limit = ratelimit.ExactLimiter(counts, "token-address", settings.token_rate_limit_per_address)
    app.state.client_status = ClientStatus(store, settings.client_recheck_ms / 1000)
    app.state.tokens = TokenService(
        store, settings.token_secret, settings.token_lifetime, status=app.state.client_status,
        client_limit=ratelimit.ExactLimiter(counts, "token-client", settings.token_rate_limit_per_minute))
    app.state.audit = AuditWriter(store)
    app.state.subscriptions = Subscriptions(store, settings)  # every write is matched from here on
    if settings.analyze_after:
        keeper = store.observer(OBSERVER)
        if not isinstance(keeper, StatisticsKeeper):  # one per store, however many apps serve it
            keeper = StatisticsKeeper(store.engine, STATISTICS_TABLES, min_rows=settings.analyze_after, fraction=0.2,
                                      min_interval=2.0, clock=time.monotonic)
            store.observe(OBSERVER, keeper)
        app.router.on_startup.append(keeper.start)
        app.router.on_shutdown.append(keeper.stop)
    if store.async_reads is None:  # reads by id on the event loop (PostgreSQL)
        store.async_reads = AsyncReadPool.for_engine(store.engine, statement_timeout_ms=settings.statement_timeout_ms)
    install_error_handlers(app)
    app.add_middleware(FastCreate, fastapi_app=app)  # plain creates, behind the gate as the reads
    app.add_middleware(FastSearch, fastapi_app=app)  # type searches, likewise
    app.add_middleware(FastRead, fastapi_app=app)  # behind the gate: the caller is known, the read audited
    app.add_middleware(auth.AuthGate, fastapi_app=app)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["*"],
                           allow_headers=["*"], expose_headers=["Location", "ETag", "Content-Location"])
    app.add_middleware(limits.UrlLimit)  # outermost: a long URL is refused before anything reads it
    app.add_middleware(RequestLog)  # around even that: it only observes (every answer, the refusals too)
    app.include_router(auth.router)
    app.include_router(console.router)  # the web console for people at /app
    app.include_router(system.router)
    app.include_router(bulk.router)  # before resources: /fhir/_export/... is not a resource type
    app.include_router(bulk_import.router)  # likewise /fhir/_import/...
    app.include_router(analysis.router)  # likewise /fhir/_analysis/...
    app.include_router(pulls.router)  # likewise /fhir/_pulls
    app.include_router(terminology.router)  # before resources: ValueSet/$expand is no id
    app.include_router(views.router)  # likewise ViewDefinition/$run
    app.include_router(resources.router)
    app.router.on_startup.append(lambda: paging.sealer(store.engine))  # before a request holds a transaction
    app.router.on_startup.append(lambda: publish(store))  # the guide, readable from the first request
    app.router.on_startup.append(freeze_start_up_heap)
    if settings.auth == "smart":
        app.router.on_startup.append(lambda: _start_auth(app))
        app.router.on_shutdown.append(app.state.rate_limiter.stop)
        app.router.on_shutdown.append(app.state.client_status.stop)
    app.router.on_startup.append(lambda: bulk.start_exports(app))
    app.router.on_shutdown.append(lambda: bulk.stop_exports(app))
    app.router.on_startup.append(lambda: bulk_import.start_imports(app))
    app.router.on_shutdown.append(lambda: bulk_import.stop_imports(app))
    app.router.on_startup.append(app.state.subscriptions.start)
    app.router.on_shutdown.append(app.state.subscriptions.stop)
    app.router.on_shutdown.append(lambda: analysis.stop_analysis_jobs(app))
    if settings.pull_schedule_seconds > 0:
        scheduler = PullScheduler(store, Path(settings.pull_dir), settings.pull_schedule_seconds,
                                  lambda: datetime.now(UTC), max_file_bytes=settings.pull_max_file_bytes,
                                  hub_base=settings.base_url or "")
        app.state.pulls = scheduler
        app.router.on_startup.append(scheduler.start)
        app.router.on_shutdown.append(scheduler.stop)
    app.router.on_shutdown.append(app.state.audit.stop)
    if store.async_reads is not None:
        app.router.on_shutdown.append(store.async_reads.close)
    return app


def _start_auth(app: FastAPI) -> None:
    """Before the first request: the signing secret, the client snapshot, the rate-limit reconciler."""
    app.state.tokens.secret  # noqa: B018 - read (or generated) now, not on the first request's event loop
    app.state.client_status.start()
    app.state.rate_limiter.start()
