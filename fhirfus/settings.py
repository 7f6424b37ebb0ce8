"""Every setting of fhirfus, declared once: its environment variable, default and help.

``Settings`` is built once, where a process starts (``fhirfus serve``, a CLI command, a test), and
passed to whoever needs a value; nothing else reads the environment. The README's configuration
table is ``markdown_table()`` (a test keeps the two equal), so a new setting is documented by
declaring it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from functools import cache
from typing import Any, get_type_hints

_DOCS = "help"
_ENV = "env"


def setting(env: str, default: Any, help: str) -> Any:
    """A field of ``Settings`` read from ``env`` (absent or empty: ``default``)."""
    if isinstance(default, tuple | dict | list):
        return field(default_factory=lambda: default, metadata={_ENV: env, _DOCS: help})
    return field(default=default, metadata={_ENV: env, _DOCS: help})


@dataclass(frozen=True)
class Settings:
    """Everything configurable (see the README's Configuration table, made from these fields)."""

    database_url: str = setting(
        "FHIRFUS_DATABASE_URL", "sqlite:///./var/fhirfus.db",
        "SQLAlchemy URL; PostgreSQL: `postgresql+psycopg://postgres@127.0.0.1:5432/fhirfus`")
    auth: str = setting(
        "FHIRFUS_AUTH", "smart",
        "`smart`: every `/fhir` request except `/metadata` and `/.well-known/smart-configuration` needs a bearer "
        "token; `off`: development only (`make run`)")
    token_secret: str | None = setting(
        "FHIRFUS_TOKEN_SECRET", None,
        "HS256 key (≥ 32 characters) that signs access tokens; unset: one is generated once per deployment and "
        "kept in the database, so every worker and host verifies the others' tokens")
    token_lifetime: int = setting("FHIRFUS_TOKEN_LIFETIME", 300, "access-token lifetime in seconds")
    rate_limit_per_minute: int = setting(
        "FHIRFUS_RATE_LIMIT", 6000,
        "`/fhir` requests per minute per client, counted once per deployment (0: no limit); beyond it 429 with "
        "`Retry-After`")
    token_rate_limit_per_minute: int = setting(
        "FHIRFUS_TOKEN_RATE_LIMIT", 60, "token requests per minute per client, counted exactly (0: no limit)")
    token_rate_limit_per_address: int = setting(
        "FHIRFUS_TOKEN_RATE_LIMIT_ADDRESS", 600,
        "token requests per minute per remote address (behind a proxy: run uvicorn with `--proxy-headers`)")
    rate_limit_sync_ms: int = setting(
        "FHIRFUS_RATE_LIMIT_SYNC_MS", 500,
        "how often each process shares its `/fhir` counts (a client may exceed its limit by what the other "
        "processes admit for it within two intervals)")
    redis_url: str | None = setting(
        "FHIRFUS_REDIS_URL", None,
        "count rate limits in this Redis database (`redis://127.0.0.1:6379/0`; one database per deployment) "
        "instead of in the database")
    client_recheck_ms: int = setting(
        "FHIRFUS_CLIENT_RECHECK_MS", 5000,
        "how often each process re-reads which clients are enabled: a disabled or removed client's access tokens "
        "stop working within this time")
    statement_timeout_ms: int = setting(
        "FHIRFUS_STATEMENT_TIMEOUT_MS", 30_000,
        "longest a single SQL statement of a request may run on PostgreSQL; beyond it the request gets 503 "
        "`too-costly` (0: no limit)")
    workers: int = setting(
        "FHIRFUS_WORKERS", 0,
        "worker processes of `fhirfus serve` (0: one per CPU core; an in-memory SQLite database always gets one)")
    analyze_after: int = setting(
        "FHIRFUS_ANALYZE_AFTER", 1000,
        "PostgreSQL: a server process refreshes the planner's statistics (`ANALYZE`) once it has written this many "
        "resources plus a fifth of those the statistics last counted, so search stays fast right after data "
        "arrives through the API (0: leave it to autovacuum)")
    referential_integrity: str = setting(
        "FHIRFUS_REFERENTIAL_INTEGRITY", "on",
        "`on`: a write whose local references name no resource (for the caller) is 400, deleting a resource "
        "that others refer to is 409; `off`: neither is checked")
    deid_key: str | None = setting(
        "FHIRFUS_DEID_KEY", None,
        "secret (≥ 16 characters) naming the pseudonym namespace of analysis exports; unset: analysis exports are "
        "refused (503)")
    oidc_issuer: str | None = setting(
        "FHIRFUS_OIDC_ISSUER", None,
        "OpenID Connect issuer (`https://idp.hospital.example/realms/x`) whose login the web console offers beside "
        "passwords; a person logs in when the provider's verified email is one of the console's accounts")
    oidc_client_id: str | None = setting("FHIRFUS_OIDC_CLIENT_ID", None, "the console's client id at that provider")
    oidc_client_secret: str | None = setting(
        "FHIRFUS_OIDC_CLIENT_SECRET", None, "its client secret (unset: a public client, PKCE only)")
    oidc_auto_provision: str | None = setting(
        "FHIRFUS_OIDC_AUTO_PROVISION", None,
        "account opened on a first login through the identity provider for an email no admin registered: "
        "`analyst` or `site:CODE` (unset: only registered emails log in; an admin account is never opened this way)")
    cors_origins: tuple[str, ...] = setting(
        "FHIRFUS_CORS_ORIGINS", (), "comma-separated browser origins allowed by CORS (CORS is off without it)")
    max_body_bytes: int = setting("FHIRFUS_MAX_BODY_BYTES", 16 * 1024 * 1024, "request bodies above this get 413")
    default_page_size: int = setting("FHIRFUS_PAGE_SIZE", 50, "default `_count`")
    max_page_size: int = setting("FHIRFUS_MAX_PAGE_SIZE", 1000, "largest `_count`")
    base_url: str | None = setting(
        "FHIRFUS_BASE_URL", None, "absolute base used in `Location`, `fullUrl` and paging links (unset: from the request)")
    export_dir: str = setting(
        "FHIRFUS_EXPORT_DIR", "./var/exports",
        "where `$export` and `$analysis-export` jobs write their files (shared by all server processes of a "
        "deployment)")
    export_max_jobs: int = setting(
        "FHIRFUS_EXPORT_MAX_JOBS", 2,
        "export jobs one server process runs at once; a kick-off beyond that gets 429 with `Retry-After`")
    export_file_max_resources: int = setting(
        "FHIRFUS_EXPORT_FILE_RESOURCES", 100_000,
        "an NDJSON file is closed and the next of its type started at this many resources")
    export_file_max_bytes: int = setting(
        "FHIRFUS_EXPORT_FILE_BYTES", 256 * 1024 * 1024, "... or at this many bytes")
    job_lease_seconds: int = setting(
        "FHIRFUS_JOB_LEASE_SECONDS", 30,
        "a Bulk Data job whose server process (or host) stopped heartbeating this long is taken over by another "
        "one (an export is rerun, an import resumed from its last committed chunk)")
    export_expire_seconds: int = setting(
        "FHIRFUS_EXPORT_EXPIRES", 24 * 3600,
        "seconds a finished job and its files are kept (the manifest's `Expires` header)")
    import_max_inputs: int = setting(
        "FHIRFUS_IMPORT_MAX_INPUTS", 100, "`$import`: most `input` files (URLs) one job may name")
    import_max_bytes: int = setting(
        "FHIRFUS_IMPORT_MAX_BYTES", 1024 * 1024 * 1024,
        "`$import`: most bytes of all inputs of one job together (fetched or uploaded); more is refused")
    import_fetch_timeout: int = setting(
        "FHIRFUS_IMPORT_FETCH_TIMEOUT", 60,
        "`$import`: seconds to connect to an input URL and between two reads of it; a kick-off's `manifestUrl` "
        "must be read whole within it")
    import_allowed_hosts: tuple[str, ...] = setting(
        "FHIRFUS_IMPORT_ALLOWED_HOSTS", (),
        "`$import`: hosts (names or addresses, comma-separated) whose URLs may be fetched even when they "
        "resolve to a loopback, private or link-local address, which are refused otherwise (SSRF)")
    import_max_jobs: int = setting(
        "FHIRFUS_IMPORT_MAX_JOBS", 1,
        "import jobs one server process runs at once; a kick-off beyond that gets 429 with `Retry-After`")
    pull_dir: str = setting(
        "FHIRFUS_PULL_DIR", "./var/pulls",
        "where `fhirfus pull` keeps the files of an export until they are loaded (a rerun resumes them)")
    pull_max_file_bytes: int = setting(
        "FHIRFUS_PULL_MAX_FILE_BYTES", 8 << 30,
        "`fhirfus pull`: most bytes one file of a source may have (unpacked, so a gzip bomb counts at its size); "
        "a larger one fails the pull")
    pull_schedule_seconds: int = setting(
        "FHIRFUS_PULL_SCHEDULE", 0,
        "every this many seconds the server runs the stored pull definitions that are due (`fhirfus pull "
        "--every`); 0: the server runs none")

    subscription_key: str | None = setting(
        "FHIRFUS_SUBSCRIPTION_KEY", None,
        "secret (≥ 16 characters) from which each Subscription's signing key is derived (`fhirfus "
        "subscription-secret ID` prints it for the receiver); notifications then carry `X-Fhirfus-Signature: "
        "sha256=<hex HMAC of the body>`; unset: notifications are not signed")
    subscription_attempts: int = setting(
        "FHIRFUS_SUBSCRIPTION_ATTEMPTS", 8,
        "failed deliveries in a row after which a Subscription gets `status` `error` (its notifications wait "
        "queued until it is made active again)")
    subscription_retry_ms: int = setting(
        "FHIRFUS_SUBSCRIPTION_RETRY_MS", 1000,
        "wait before the first retry of a failed delivery; it doubles with each further failure (at most 5 minutes)")
    subscription_timeout_ms: int = setting(
        "FHIRFUS_SUBSCRIPTION_TIMEOUT_MS", 10_000, "how long a notification POST/PUT may take before it counts as failed")
    subscription_poll_ms: int = setting(
        "FHIRFUS_SUBSCRIPTION_POLL_MS", 200,
        "how often each server process looks for queued notifications written by other processes (its own writes "
        "wake it at once) and for retries that came due, while there is work")
    subscription_idle_poll_ms: int = setting(
        "FHIRFUS_SUBSCRIPTION_IDLE_POLL_MS", 2000,
        "the longest an idle process waits between two such looks: the wait doubles from "
        "FHIRFUS_SUBSCRIPTION_POLL_MS after each look that found nothing, and is back to it after any work, "
        "write of its own or failed delivery")
    subscription_max_per_site: int = setting(
        "FHIRFUS_SUBSCRIPTION_MAX_PER_SITE", 100,
        "most Subscriptions one site (or the administrators, without a site) may hold; a write beyond it is "
        "refused (each one is matched against every write of its site); 0: no limit")
    subscription_private_targets: str = setting(
        "FHIRFUS_SUBSCRIPTION_PRIVATE_TARGETS", "allow",
        "`allow`: endpoints may be loopback or private addresses (hospital networks, tests); `deny` (or anything "
        "but `allow`): notifications to an endpoint that is or resolves to such an address fail (SSRF protection "
        "for a server on a public network)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings of ``environ`` (the process environment by default); a malformed value exits."""
        environ = os.environ if environ is None else environ
        types = get_type_hints(cls)
        values: dict[str, Any] = {}
        for item in fields(cls):
            raw = environ.get(item.metadata[_ENV], "")
            if raw.strip():
                values[item.name] = _parse(item.metadata[_ENV], raw, types[item.name])
        return cls(**values)


def _parse(env: str, raw: str, kind: Any) -> Any:
    if kind is int:
        try:
            return int(raw)
        except ValueError as exc:
            raise SystemExit(f"{env} must be an integer, got {raw!r}") from exc
    if kind == tuple[str, ...]:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


#: Settings of the tests and benchmarks, not of the server (declared here so the table has them all).
TEST_POSTGRES_URL = ("FHIRFUS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test",
                     "server the tests and benchmarks create their throw-away databases on")


def test_postgres_url(environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    return environ.get(TEST_POSTGRES_URL[0]) or TEST_POSTGRES_URL[1]


def markdown_table() -> str:
    """The README's configuration table."""

    def shown(item: Any) -> str:
        value = item.default_factory() if item.default is MISSING else item.default
        return "none" if value is None or value == () else f"`{value}`"

    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{item.metadata[_ENV]}` | {shown(item)} | {item.metadata[_DOCS]} |" for item in fields(Settings)]
    rows.append(f"| `{TEST_POSTGRES_URL[0]}` | `{TEST_POSTGRES_URL[1]}` | {TEST_POSTGRES_URL[2]} |")
    return "\n".join(rows)


@cache
def get_settings() -> Settings:
    """The process's settings from its environment, read once (entry points only)."""
    return Settings.from_env()
