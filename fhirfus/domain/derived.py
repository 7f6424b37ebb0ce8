"""Resources the server derives on write: TWSTRS score Observations of stored responses.

A stored TWSTRS QuestionnaireResponse gets one score Observation per score that exists (total,
severity, disability, pain), written in the same transaction with deterministic ids, so an update
of the response updates its scores, a score that became incomplete disappears, and a deleted
response takes its scores with it. Scores belong to the response's site.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import Connection

from fhirfus.db.visibility import EVERYTHING, site_label, with_site_label
from fhirfus.domain import twstrs
from fhirfus.store import repository
from fhirfus.store.repository import Stored

SCORE_CODES = ("total", "severity", "disability", "pain")


def score_id(response_id: str, code: str) -> str:
    """``<response id>-<code>``; hashed when that would exceed the 64-character id limit."""
    candidate = f"{response_id}-{code}"
    if len(candidate) <= 64:
        return candidate
    return f"twstrs-{hashlib.sha256(response_id.encode()).hexdigest()[:40]}-{code}"


def derived_keys(res_type: str, res_id: str) -> list[tuple[str, str]]:
    """(type, id) of every resource the server may derive from ``res_type/res_id``."""
    if res_type != "QuestionnaireResponse":
        return []
    return [("Observation", score_id(res_id, code)) for code in SCORE_CODES]


def _scores(response_id: str, content: dict) -> dict[str, dict]:
    """The score Observations of a TWSTRS response by id (none for other responses), labelled with
    the response's site."""
    if not twstrs.is_twstrs_response(content):
        return {}
    reference = f"QuestionnaireResponse/{response_id}"
    site = site_label(content)
    return {
        score_id(response_id, observation["code"]["coding"][0]["code"]): with_site_label(observation, site)
        for observation in twstrs.score_observations(content, reference)
    }


def after_write(conn: Connection, stored: Stored) -> None:
    """Bring the derived resources of ``stored`` up to date (no-op for other resources)."""
    if stored.res_type != "QuestionnaireResponse":
        return
    wanted = {} if stored.deleted or stored.content is None else _scores(stored.res_id, stored.content)
    for _, obs_id in derived_keys(stored.res_type, stored.res_id):
        current = repository.current(conn, EVERYTHING, "Observation", obs_id, for_update=True)
        if obs_id in wanted:
            body = wanted[obs_id]
            if current is None:
                repository.create(conn, "Observation", obs_id, body, "PUT")
            elif current.deleted or _changed(current.content, body):
                repository.replace(conn, current, body, "PUT")
        elif current is not None and not current.deleted:
            repository.tombstone(conn, current)


def to_create_with(items: list[repository.NewResource]) -> list[repository.NewResource]:
    """The derived resources of resources about to be created in bulk (ids never used before, so
    their derived resources are new too): the caller creates both in one ``create_many``, one
    round of bulk inserts instead of two."""
    return [
        repository.NewResource("Observation", obs_id, body, "PUT")
        for item in items if item.res_type == "QuestionnaireResponse"
        for obs_id, body in _scores(item.res_id, item.content).items()
    ]


def _changed(stored: dict | None, body: dict) -> bool:
    strip = lambda d: {k: v for k, v in (d or {}).items() if k not in ("meta", "id")}  # noqa: E731
    return strip(stored) != strip(body)
