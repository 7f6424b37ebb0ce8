"""The client registry: who may ask for tokens, with which keys, role, site and scopes.

A client's public keys are either stored (``jwks``) or published by the client at a URL
(``jwks_url``, fetched by ``fhirfus.auth.jwks_remote``). A disabled client keeps its row (and its
audit trail's meaning) but gets no tokens, and its live tokens stop working (``client_status``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, insert, null, select, update
from sqlalchemy.exc import IntegrityError

from fhirfus.auth.access import ROLES
from fhirfus.auth.jwks import InvalidJwks, registered_key_set
from fhirfus.auth.jwks_remote import check_jwks_url
from fhirfus.auth.scopes import parse_scopes
from fhirfus.db.tables import auth_clients, auth_jti
from fhirfus.db.visibility import PUBLISHED, check_site_code
from fhirfus.errors import InvalidRequest, NotFound
from fhirfus.store.repository import Store

#: Longest client name (``auth_clients.name``): longer is a 400 naming ``name``, never a database error.
MAX_NAME = 200


@dataclass(frozen=True)
class Client:
    client_id: str
    name: str
    role: str
    site: str | None
    scope: str
    jwks: dict[str, Any] | None
    jwks_url: str | None = None
    created_at: datetime | None = None
    disabled_at: datetime | None = None

    @property
    def enabled(self) -> bool:
        return self.disabled_at is None


class UnknownClient(NotFound):
    """No client has this id."""

    def __init__(self, client_id: str) -> None:
        super().__init__(f"no client '{client_id}'", "client_id")


def _keys(jwks: dict[str, Any] | None, jwks_url: str | None) -> dict[str, Any]:
    """The key columns of a client: a stored JWKS or a URL where the client publishes it (the
    other one SQL NULL, not JSON null)."""
    if (jwks is None) == (jwks_url is None):
        raise InvalidRequest("give the client's keys either as a JWKS or as a jwks_url", "jwks")
    try:
        if jwks is not None:
            registered_key_set(jwks)
            return {"jwks": jwks, "jwks_url": None}
        return {"jwks": null(), "jwks_url": check_jwks_url(str(jwks_url))}
    except InvalidJwks as exc:
        raise InvalidRequest(str(exc), "jwks") from exc


def register(store: Store, name: str, role: str, scope: str, jwks: dict[str, Any] | None = None,
             site: str | None = None, *, jwks_url: str | None = None) -> Client:
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", "role")
    if not name or len(name) > MAX_NAME:
        raise InvalidRequest(f"a client's name is 1 to {MAX_NAME} characters, got {len(name)}", "name")
    if role == "site" and not site:
        raise InvalidRequest("a site client needs --site", "site")
    if site == PUBLISHED:
        raise InvalidRequest(f"{PUBLISHED!r} names what the server publishes, not a site", "site")
    if site:
        check_site_code(site)
    keys = _keys(jwks, jwks_url)
    parse_scopes(scope)
    client = Client(str(uuid.uuid4()), name, role, site, scope, jwks, keys["jwks_url"], datetime.now(UTC))
    with store.writing() as conn:
        conn.execute(insert(auth_clients).values(
            client_id=client.client_id, name=name, role=role, site=site, scope=scope, created_at=client.created_at,
            **keys))
    return client


def _client(row: Any) -> Client:
    return Client(row.client_id, row.name, row.role, row.site, row.scope, row.jwks, row.jwks_url, row.created_at,
                  row.disabled_at)


def find(store: Store, client_id: str) -> Client | None:
    with store.reading() as conn:
        row = conn.execute(select(auth_clients).where(auth_clients.c.client_id == client_id)).first()
    return None if row is None else _client(row)


def get(store: Store, client_id: str) -> Client:
    client = find(store, client_id)
    if client is None:
        raise UnknownClient(client_id)
    return client


def all_clients(store: Store) -> list[Client]:
    with store.reading() as conn:
        rows = conn.execute(select(auth_clients).order_by(auth_clients.c.created_at, auth_clients.c.client_id))
        return [_client(row) for row in rows]


def _update(store: Store, client_id: str, **values: Any) -> Client:
    with store.writing() as conn:
        changed = conn.execute(update(auth_clients).where(auth_clients.c.client_id == client_id).values(**values))
    if changed.rowcount == 0:
        raise UnknownClient(client_id)
    return get(store, client_id)


def set_enabled(store: Store, client_id: str, enabled: bool) -> Client:
    """Enable or disable a client (disabling keeps the time it happened; a second disable keeps the first)."""
    if enabled:
        return _update(store, client_id, disabled_at=None)
    client = get(store, client_id)
    return client if not client.enabled else _update(store, client_id, disabled_at=datetime.now(UTC))


def set_keys(store: Store, client_id: str, jwks: dict[str, Any] | None = None, jwks_url: str | None = None) -> Client:
    """Replace a client's keys (key rotation): assertions signed with the old keys are refused from now on."""
    return _update(store, client_id, **_keys(jwks, jwks_url))


def remove(store: Store, client_id: str) -> None:
    with store.writing() as conn:
        removed = conn.execute(delete(auth_clients).where(auth_clients.c.client_id == client_id))
    if removed.rowcount == 0:
        raise UnknownClient(client_id)


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
