"""The client registry: who may ask for tokens, with which keys, role, site and scopes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from fhirfus.auth.access import ROLES
from fhirfus.auth.jwks import InvalidJwks, registered_key_set
from fhirfus.auth.scopes import parse_scopes
from fhirfus.fhir.errors import InvalidRequest
from fhirfus.store.repository import Store
from fhirfus.store.tables import auth_clients, auth_jti


@dataclass(frozen=True)
class Client:
    client_id: str
    name: str
    role: str
    site: str | None
    scope: str
    jwks: dict[str, Any]


def register(store: Store, name: str, role: str, scope: str, jwks: dict[str, Any], site: str | None = None) -> Client:
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", "role")
    if role == "site" and not site:
        raise InvalidRequest("a site client needs --site", "site")
    try:
        registered_key_set(jwks)
    except InvalidJwks as exc:
        raise InvalidRequest(str(exc), "jwks") from exc
    parse_scopes(scope)
    client = Client(str(uuid.uuid4()), name, role, site, scope, jwks)
    with store.writing() as conn:
        conn.execute(insert(auth_clients).values(
            client_id=client.client_id, name=name, role=role, site=site, scope=scope, jwks=jwks,
            created_at=datetime.now(UTC)))
    return client


def find(store: Store, client_id: str) -> Client | None:
    with store.reading() as conn:
        row = conn.execute(select(auth_clients).where(auth_clients.c.client_id == client_id)).first()
    if row is None:
        return None
    return Client(row.client_id, row.name, row.role, row.site, row.scope, row.jwks)


def use_jti(store: Store, client_id: str, jti: str, expires_at: datetime) -> bool:
    """Record an assertion id; False when it was used before (a replay)."""
    now = datetime.now(UTC)
    try:
        with store.writing() as conn:
            conn.execute(delete(auth_jti).where(auth_jti.c.expires_at < now))
            conn.execute(insert(auth_jti).values(jti=f"{client_id}:{jti}"[:255], client_id=client_id,
                                                 expires_at=expires_at))
    except IntegrityError:
        return False
    return True
