"""Settings from environment variables (the contract in design.md §2), read once per process."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache

DEFAULT_DATABASE_URL = "sqlite:///./var/fhirfus.db"
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024


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
        )


@cache
def get_settings() -> Settings:
    return Settings.from_env()
