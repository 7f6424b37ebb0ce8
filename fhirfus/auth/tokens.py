"""SMART Backend Services: client assertions in, short-lived bearer tokens out.

The token endpoint authenticates the client by its signed assertion (``client_auth``), applies the
per-client token rate limit, records the assertion's ``jti`` (replays are refused) and issues an
access token: a JWT signed by the server (HS256, ``FHIRFUS_TOKEN_SECRET`` or the deployment's
shared secret, see ``signing_secret``) carrying client, role, site and granted scopes. Verifying it
needs no database round trip and verified tokens are cached, so authentication costs little per
request; whether the client is still enabled is looked up in a per-process snapshot
(``client_status``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import jwt

from fhirfus.auth import clients
from fhirfus.auth.access import Access
from fhirfus.auth.client_auth import ClientAuthenticator
from fhirfus.auth.client_status import ClientStatus
from fhirfus.auth.jwks import ALGORITHMS as ASSERTION_ALGORITHMS
from fhirfus.auth.oauth import ASSERTION_TYPE, OAuthError, TokenRequest, invalid_client, too_many
from fhirfus.auth.ratelimit import ExactLimiter
from fhirfus.auth.scopes import narrow, parse_scopes
from fhirfus.auth.signing_secret import shared_secret
from fhirfus.errors import InvalidRequest, Unauthorized
from fhirfus.store.repository import Store

__all__ = ["ASSERTION_ALGORITHMS", "ASSERTION_TYPE", "OAuthError", "TokenService"]
ISSUER = "fhirfus"
_INVALID_TOKEN = {"WWW-Authenticate": 'Bearer realm="fhirfus", error="invalid_token"'}


class TokenService:
    def __init__(self, store: Store, secret: str | None, lifetime: int, *, status: ClientStatus,
                 client_limit: ExactLimiter, authenticator: ClientAuthenticator | None = None,
                 now: Callable[[], float] = time.time) -> None:
        if secret is not None and len(secret) < 32:
            raise ValueError("FHIRFUS_TOKEN_SECRET must be at least 32 characters (HS256 key length)")
        self.store = store
        self._secret = secret
        self._secret_lock = threading.Lock()
        self.lifetime = lifetime
        self.status = status
        self.client_limit = client_limit
        self.authenticator = authenticator or ClientAuthenticator(store, now=now)
        self.now = now
        self._verified: OrderedDict[str, tuple[Access, float, int]] = OrderedDict()

    @property
    def secret(self) -> str:
        """The signing secret: configured, or the deployment's (read from the database once)."""
        if self._secret is None:
            with self._secret_lock:
                if self._secret is None:
                    self._secret = shared_secret(self.store)
        return self._secret

    # --- the token endpoint ----------------------------------------------------------------

    def issue(self, request: TokenRequest, token_url: str) -> dict[str, Any]:
        client, claims = self.authenticator.authenticate(request, token_url)
        wait = self.client_limit.retry_after(client.client_id)
        if wait:
            raise too_many(f"too many token requests from client '{client.client_id}'", wait)
        if not clients.use_jti(self.store, client.client_id, claims.jti, datetime.fromtimestamp(claims.expires, UTC)):
            raise invalid_client("jti was already used (replay)")
        try:
            granted = narrow(request.scope, client.scope)
        except InvalidRequest as exc:
            raise OAuthError("invalid_scope", exc.message) from exc
        if not granted:
            raise OAuthError("invalid_scope", f"none of the requested scopes is granted to this client ({client.scope})")
        now = int(self.now())
        token = jwt.encode(
            {"iss": ISSUER, "sub": client.client_id, "role": client.role, "site": client.site, "scope": granted,
             "iat": now, "exp": now + self.lifetime, "jti": str(uuid.uuid4())},
            self.secret, algorithm="HS256",
        )
        return {"access_token": token, "token_type": "bearer", "expires_in": self.lifetime, "scope": granted}

    # --- every request ---------------------------------------------------------------------

    def access_for(self, authorization: str | None) -> Access:
        """The caller behind an ``Authorization: Bearer …`` header, or 401 (also when its client
        has been disabled or removed since the token was issued)."""
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Unauthorized("A bearer token is required", headers={"WWW-Authenticate": 'Bearer realm="fhirfus"'})
        token = authorization[7:].strip()
        cached = self._verified.get(token)
        if cached is None or cached[1] <= self.now():
            cached = self._verify(token)
        access, _, issued_at = cached
        if not self.status.allows(access.client_id, issued_at):
            raise Unauthorized(f"Client '{access.client_id}' is disabled or removed", headers=_INVALID_TOKEN)
        return access

    def _verify(self, token: str) -> tuple[Access, float, int]:
        try:
            claims = jwt.decode(token, self.secret, algorithms=["HS256"], issuer=ISSUER,
                                options={"require": ["exp", "iat", "sub", "scope"]})
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"Invalid bearer token: {exc}", headers=_INVALID_TOKEN) from exc
        access = Access(claims["sub"], claims.get("role", "site"), claims.get("site"), parse_scopes(claims["scope"]))
        verified = (access, float(claims["exp"]), int(claims["iat"]))
        self._verified[token] = verified
        if len(self._verified) > 10_000:
            self._verified.popitem(last=False)
        return verified
