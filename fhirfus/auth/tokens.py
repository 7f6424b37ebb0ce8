"""SMART Backend Services: client assertions in, short-lived bearer tokens out.

The client signs a JWT (RS384 or ES384) with a key whose public half it registered; the token
endpoint checks signature, issuer/subject, audience (the token URL), expiry (at most five minutes
ahead) and that the ``jti`` was never seen, then issues an access token: a JWT signed by the server
(HS256, ``FHIRFUS_TOKEN_SECRET``) carrying client, role, site and granted scopes. Verifying it
needs no database round trip, and verified tokens are cached, so authentication costs little per
request.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt

from fhirfus.auth import clients
from fhirfus.auth.access import Access
from fhirfus.auth.scopes import narrow, parse_scopes
from fhirfus.fhir.errors import InvalidRequest, Unauthorized
from fhirfus.store.repository import Store

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ("RS384", "ES384")
MAX_ASSERTION_AHEAD = 300
ISSUER = "fhirfus"


@dataclass(frozen=True)
class OAuthError(Exception):
    """An RFC 6749 error answer of the token endpoint (not an OperationOutcome)."""

    error: str
    description: str
    status: int = 400

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class TokenService:
    def __init__(self, store: Store, secret: str | None, lifetime: int = 300) -> None:
        if secret is not None and len(secret) < 32:
            raise ValueError("FHIRFUS_TOKEN_SECRET must be at least 32 characters (HS256 key length)")
        self.store = store
        self.secret = secret or secrets.token_urlsafe(32)
        self.lifetime = lifetime
        self._verified: OrderedDict[str, tuple[Access, float]] = OrderedDict()

    # --- the token endpoint ----------------------------------------------------------------

    def issue(self, form: dict[str, str], token_url: str) -> dict[str, Any]:
        if form.get("grant_type") != "client_credentials":
            raise OAuthError("unsupported_grant_type", "grant_type must be client_credentials")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise OAuthError("invalid_request", f"client_assertion_type must be {ASSERTION_TYPE}")
        assertion = form.get("client_assertion") or ""
        client = self._client_of(assertion)
        claims = self._verify_assertion(assertion, client, token_url)
        expires = datetime.fromtimestamp(claims["exp"], UTC)
        if not clients.use_jti(self.store, client.client_id, str(claims["jti"]), expires):
            raise OAuthError("invalid_client", "client_assertion jti was already used (replay)", 401)
        try:
            granted = narrow(form.get("scope") or "", client.scope)
        except InvalidRequest as exc:
            raise OAuthError("invalid_scope", exc.message) from exc
        if not granted:
            raise OAuthError("invalid_scope", f"none of the requested scopes is granted to this client ({client.scope})")
        now = int(time.time())
        token = jwt.encode(
            {"iss": ISSUER, "sub": client.client_id, "role": client.role, "site": client.site, "scope": granted,
             "iat": now, "exp": now + self.lifetime, "jti": str(uuid.uuid4())},
            self.secret, algorithm="HS256",
        )
        return {"access_token": token, "token_type": "bearer", "expires_in": self.lifetime, "scope": granted}

    def _client_of(self, assertion: str) -> clients.Client:
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise OAuthError("invalid_client", f"client_assertion is not a JWT: {exc}", 401) from exc
        client_id = unverified.get("iss")
        if not client_id or unverified.get("sub") != client_id:
            raise OAuthError("invalid_client", "client_assertion needs iss = sub = client_id", 401)
        client = clients.find(self.store, str(client_id))
        if client is None:
            raise OAuthError("invalid_client", f"unknown client '{client_id}'", 401)
        return client

    def _verify_assertion(self, assertion: str, client: clients.Client, token_url: str) -> dict[str, Any]:
        header = jwt.get_unverified_header(assertion)
        if header.get("alg") not in ASSERTION_ALGORITHMS:
            raise OAuthError("invalid_client", f"client_assertion must be signed {' or '.join(ASSERTION_ALGORITHMS)}", 401)
        keys = jwt.PyJWKSet.from_dict(client.jwks).keys
        candidates = [k for k in keys if header.get("kid") in (None, k.key_id)] or keys
        last_error: Exception | None = None
        for key in candidates:
            try:
                claims = jwt.decode(assertion, key.key, algorithms=list(ASSERTION_ALGORITHMS), audience=token_url,
                                    issuer=client.client_id, options={"require": ["exp", "jti", "aud", "iss", "sub"]})
            except jwt.InvalidAudienceError as exc:
                raise OAuthError("invalid_client", f"client_assertion aud must be {token_url}", 401) from exc
            except jwt.ExpiredSignatureError as exc:
                raise OAuthError("invalid_client", "client_assertion has expired", 401) from exc
            except jwt.PyJWTError as exc:
                last_error = exc
                continue
            if claims["exp"] > time.time() + MAX_ASSERTION_AHEAD:
                raise OAuthError("invalid_client", "client_assertion exp is more than 5 minutes ahead", 401)
            return claims
        raise OAuthError("invalid_client", f"client_assertion signature does not verify ({last_error})", 401)

    # --- every request ---------------------------------------------------------------------

    def access_for(self, authorization: str | None) -> Access:
        """The caller behind an ``Authorization: Bearer …`` header, or 401."""
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Unauthorized("A bearer token is required", headers={"WWW-Authenticate": 'Bearer realm="fhirfus"'})
        token = authorization[7:].strip()
        cached = self._verified.get(token)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        try:
            claims = jwt.decode(token, self.secret, algorithms=["HS256"], issuer=ISSUER,
                                options={"require": ["exp", "sub", "scope"]})
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"Invalid bearer token: {exc}", headers={
                "WWW-Authenticate": 'Bearer realm="fhirfus", error="invalid_token"'}) from exc
        access = Access(claims["sub"], claims.get("role", "site"), claims.get("site"), parse_scopes(claims["scope"]))
        self._verified[token] = (access, float(claims["exp"]))
        if len(self._verified) > 10_000:
            self._verified.popitem(last=False)
        return access
