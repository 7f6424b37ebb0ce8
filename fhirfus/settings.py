"""Settings from environment variables (the contract in design.md §2), read once per process."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache

DEFAULT_DATABASE_URL = "sqlite:///./var/fhirfus.db"
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_EXPORT_DIR = "./var/exports"


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from exc


@dataclass(frozen=True)
class Settings:
    """Everything configurable; see README 'Configuration'."""

    database_url: str = DEFAULT_DATABASE_URL
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    default_page_size: int = 50
    max_page_size: int = 1000
    auth: str = "smart"
    base_url: str | None = None
    #: Bulk Data $export: where job files go, jobs per process, file split, time to live.
    export_dir: str = DEFAULT_EXPORT_DIR
    export_max_jobs: int = 2
    export_file_max_resources: int = 100_000
    export_file_max_bytes: int = 256 * 1024 * 1024
    export_expire_seconds: int = 24 * 3600
    #: Longest a single SQL statement of a request may run on PostgreSQL (milliseconds, 0: no limit).
    statement_timeout_ms: int = 30_000
    #: SMART backend services: access-token signing secret (unset: one generated per deployment and
    #: kept in the database), token lifetime, browser origins allowed by CORS (none: CORS off).
    token_secret: str | None = None
    token_lifetime: int = 300
    cors_origins: tuple[str, ...] = ()
    #: Rate limits per minute (0: none): /fhir requests per client, token requests per client and
    #: per remote address; counted per deployment in the database, or in Redis when ``redis_url`` is
    #: set; each process shares its /fhir counts every ``rate_limit_sync_ms``.
    rate_limit_per_minute: int = 6000
    token_rate_limit_per_minute: int = 60
    token_rate_limit_per_address: int = 600
    rate_limit_sync_ms: int = 500
    redis_url: str | None = None
    #: How often each process re-reads which clients are enabled (a disabled client's access tokens
    #: stop working within this time).
    client_recheck_ms: int = 5000
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            database_url=os.environ.get("FHIRFUS_DATABASE_URL", DEFAULT_DATABASE_URL),
            max_body_bytes=_int_env("FHIRFUS_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
            default_page_size=_int_env("FHIRFUS_PAGE_SIZE", 50),
            max_page_size=_int_env("FHIRFUS_MAX_PAGE_SIZE", 1000),
            auth=os.environ.get("FHIRFUS_AUTH", "smart"),
            base_url=os.environ.get("FHIRFUS_BASE_URL") or None,
            export_dir=os.environ.get("FHIRFUS_EXPORT_DIR") or DEFAULT_EXPORT_DIR,
            export_max_jobs=_int_env("FHIRFUS_EXPORT_MAX_JOBS", 2),
            export_file_max_resources=_int_env("FHIRFUS_EXPORT_FILE_RESOURCES", 100_000),
            export_file_max_bytes=_int_env("FHIRFUS_EXPORT_FILE_BYTES", 256 * 1024 * 1024),
            export_expire_seconds=_int_env("FHIRFUS_EXPORT_EXPIRES", 24 * 3600),
            statement_timeout_ms=_int_env("FHIRFUS_STATEMENT_TIMEOUT_MS", 30_000),
            token_secret=os.environ.get("FHIRFUS_TOKEN_SECRET") or None,
            token_lifetime=_int_env("FHIRFUS_TOKEN_LIFETIME", 300),
            cors_origins=tuple(o for o in os.environ.get("FHIRFUS_CORS_ORIGINS", "").split(",") if o),
            rate_limit_per_minute=_int_env("FHIRFUS_RATE_LIMIT", 6000),
            token_rate_limit_per_minute=_int_env("FHIRFUS_TOKEN_RATE_LIMIT", 60),
            token_rate_limit_per_address=_int_env("FHIRFUS_TOKEN_RATE_LIMIT_ADDRESS", 600),
            rate_limit_sync_ms=_int_env("FHIRFUS_RATE_LIMIT_SYNC_MS", 500),
            redis_url=os.environ.get("FHIRFUS_REDIS_URL") or None,
            client_recheck_ms=_int_env("FHIRFUS_CLIENT_RECHECK_MS", 5000),
        )


@cache
def get_settings() -> Settings:
    return Settings.from_env()
