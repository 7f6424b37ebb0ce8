"""Stored pull definitions: what to pull, and how far the last pull got (``pull_definitions``).

The watermark (``since``) only moves after everything of an export is loaded, in the transaction
of the pull's Provenance; until then a rerun pulls the same export again (``job_url``, while the
source keeps it) or a new one from the old watermark. Loads are PUTs by id, so either way the hub
converges to the source's data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, insert, select, update

from fhirfus.db.tables import pull_definitions
from fhirfus.errors import InvalidRequest, NotFound
from fhirfus.fhir.validation import shown, valid_id
from fhirfus.store.repository import Store

IDLE, RUNNING, OK, FAILED = "idle", "running", "ok", "failed"
#: A site label that can lead a FHIR id (``{site}-{id}``), leaving room for the source's id.
_SITE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,31}$")
#: This hub's client id at the source, as ``pull_definitions.client_id`` holds it.
MAX_CLIENT_ID = 255


@dataclass(frozen=True)
class Definition:
    name: str
    source_url: str
    client_id: str
    key_path: str
    site: str
    group_id: str | None = None
    types: tuple[str, ...] = ()
    every_seconds: int | None = None
    since: str | None = None
    job_url: str | None = None
    status: str = IDLE
    last_error: str | None = None
    last_count: int = 0
    last_run: datetime | None = None
    next_run: datetime | None = None
    patient_level: bool = False   # ``Patient/$export`` (every patient's compartment) instead of ``$export``

    @property
    def level(self) -> str:
        return "group" if self.group_id else "patient" if self.patient_level else "system"

    def to_json(self) -> dict:
        return {"name": self.name, "source": self.source_url, "client_id": self.client_id, "key": self.key_path,
                "site": self.site, "level": self.level, "group": self.group_id, "types": list(self.types), "every_seconds": self.every_seconds,
                "since": self.since, "status": self.status, "last_error": self.last_error,
                "last_count": self.last_count, "last_run": _iso(self.last_run), "next_run": _iso(self.next_run),
                "in_flight": self.job_url}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _from_row(row: object) -> Definition:
    r = row._mapping  # type: ignore[attr-defined]
    return Definition(
        r["name"], r["source_url"], r["client_id"], r["key_path"], r["site"], r["group_id"],
        tuple(t for t in (r["types"] or "").split(",") if t), r["every_seconds"], r["since"], r["job_url"],
        r["status"], r["last_error"], r["last_count"], r["last_run"], r["next_run"], r["level"] == "patient")


def save(store: Store, definition: Definition, moment: datetime) -> Definition:
    """Create the definition, or change where and how an existing one pulls (its watermark stays
    unless the source, site, level, group or types change: then the next pull is a full one)."""
    if not definition.name or len(definition.name) > 64:
        raise InvalidRequest("a pull definition needs a name of at most 64 characters", "name")
    if not _SITE.match(definition.site):
        raise InvalidRequest(f"--site {definition.site!r}: a site label is 1-32 letters, digits, '-' or '.', "
                             "starting with a letter or digit (it leads the ids of the site's data here)", "site")
    if not definition.client_id or len(definition.client_id) > MAX_CLIENT_ID:
        raise InvalidRequest(f"--client-id is 1 to {MAX_CLIENT_ID} characters, got {len(definition.client_id)}",
                             "client-id")
    if definition.group_id is not None and not valid_id(definition.group_id):
        raise InvalidRequest(f"--group {shown(definition.group_id)}: a Group id is 1-64 characters of A-Z, a-z, "
                             "0-9, '-' and '.'", "group")
    if not definition.source_url.startswith(("http://", "https://")):
        raise InvalidRequest(f"--from {definition.source_url!r} is not an http(s) FHIR base URL", "from")
    values = {"source_url": definition.source_url.rstrip("/"), "client_id": definition.client_id,
              "key_path": definition.key_path, "site": definition.site, "level": definition.level, "group_id": definition.group_id,
              "types": ",".join(definition.types) or None, "every_seconds": definition.every_seconds}
    with store.writing() as conn:
        row = conn.execute(select(pull_definitions).where(pull_definitions.c.name == definition.name)
                           .with_for_update()).first()
        if row is None:
            conn.execute(insert(pull_definitions).values(name=definition.name, status=IDLE, last_count=0,
                                                         created=moment, next_run=moment, **values))
        else:
            same_data = all(row._mapping[k] == values[k] for k in ("source_url", "site", "level", "group_id", "types"))
            reset = {} if same_data else {"since": None, "job_url": None}
            conn.execute(update(pull_definitions).where(pull_definitions.c.name == definition.name)
                         .values(**values, **reset))
    return get(store, definition.name)


def get(store: Store, name: str) -> Definition:
    with store.reading() as conn:
        row = conn.execute(select(pull_definitions).where(pull_definitions.c.name == name)).first()
    if row is None:
        raise NotFound(f"No pull definition '{name}'", "name")
    return _from_row(row)


def all_definitions(store: Store) -> list[Definition]:
    with store.reading() as conn:
        return [_from_row(r) for r in conn.execute(select(pull_definitions).order_by(pull_definitions.c.name))]


def due(store: Store, moment: datetime) -> list[Definition]:
    """Scheduled definitions whose next run has come."""
    return [d for d in all_definitions(store)
            if d.every_seconds and (d.next_run is None or d.next_run <= moment)]


def claim(store: Store, definition: Definition, moment: datetime) -> bool:
    """Take a due definition for this process: its ``next_run`` moves on only if nobody moved it."""
    seen = pull_definitions.c.next_run.is_(None) if definition.next_run is None \
        else pull_definitions.c.next_run == definition.next_run
    with store.writing() as conn:
        result = conn.execute(update(pull_definitions).where(pull_definitions.c.name == definition.name, seen)
                              .values(next_run=_next(definition, moment)))
    return result.rowcount == 1


def started(store: Store, name: str, moment: datetime) -> None:
    with store.writing() as conn:
        conn.execute(update(pull_definitions).where(pull_definitions.c.name == name)
                     .values(status=RUNNING, last_run=moment, last_error=None))


def in_flight(store: Store, name: str, job_url: str | None) -> None:
    with store.writing() as conn:
        conn.execute(update(pull_definitions).where(pull_definitions.c.name == name).values(job_url=job_url))


def finished_in(conn: Connection, definition: Definition, since: str, count: int, moment: datetime) -> None:
    """The watermark moves (inside the transaction that writes the pull's Provenance)."""
    conn.execute(update(pull_definitions).where(pull_definitions.c.name == definition.name).values(
        since=since, job_url=None, status=OK, last_error=None, last_count=count, next_run=_next(definition, moment)))


def failed(store: Store, definition: Definition, message: str, moment: datetime) -> None:
    with store.writing() as conn:
        conn.execute(update(pull_definitions).where(pull_definitions.c.name == definition.name).values(
            status=FAILED, last_error=message[:2000], next_run=_next(definition, moment)))


def _next(definition: Definition, moment: datetime) -> datetime | None:
    return moment + timedelta(seconds=definition.every_seconds) if definition.every_seconds else None
