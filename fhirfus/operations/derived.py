"""Resources the server derives on write: TWSTRS score Observations of stored responses.

A stored TWSTRS QuestionnaireResponse gets one score Observation per score that exists (total,
severity, disability, pain), written in the same transaction with deterministic ids, so an update
of the response updates its scores, a score that became incomplete disappears, and a deleted
response takes its scores with it.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import Connection

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


def _is_scored(stored: Stored | None) -> bool:
    return (
        stored is not None and stored.res_type == "QuestionnaireResponse"
        and stored.content is not None and twstrs.is_twstrs_response(stored.content)
    )


def after_write(conn: Connection, stored: Stored) -> None:
    """Bring the derived resources of ``stored`` up to date (no-op for other resources)."""
    if stored.res_type != "QuestionnaireResponse":
        return
    wanted: dict[str, dict] = {}
    if not stored.deleted and _is_scored(stored):
        reference = f"QuestionnaireResponse/{stored.res_id}"
        for observation in twstrs.score_observations(stored.content or {}, reference):
            code = observation["code"]["coding"][0]["code"]
            wanted[score_id(stored.res_id, code)] = observation
    for code in SCORE_CODES:
        obs_id = score_id(stored.res_id, code)
        current = repository.current(conn, "Observation", obs_id, for_update=True)
        if obs_id in wanted:
            body = {**wanted[obs_id], "id": obs_id}
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
    derived = []
    for item in items:
        if item.res_type == "QuestionnaireResponse" and twstrs.is_twstrs_response(item.content):
            reference = f"QuestionnaireResponse/{item.res_id}"
            for observation in twstrs.score_observations(item.content, reference):
                obs_id = score_id(item.res_id, observation["code"]["coding"][0]["code"])
                derived.append(repository.NewResource("Observation", obs_id, {**observation, "id": obs_id}, "PUT"))
    return derived


def _changed(stored: dict | None, body: dict) -> bool:
    strip = lambda d: {k: v for k, v in (d or {}).items() if k not in ("meta", "id")}  # noqa: E731
    return strip(stored) != strip(body)
