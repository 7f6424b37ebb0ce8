"""OpenID Connect login for the web console (authorization code flow with PKCE).

The hospital's identity provider says who the person is; the console's own account says what they
may do: the ID token's email (verified by the provider) must be an enabled account
(``fhirfus.auth.people``), whose role and site apply; an admin registers the email first, unless
``FHIRFUS_OIDC_AUTO_PROVISION`` opens accounts of one non-admin role on first login. Logging out
ends the provider's session too when it publishes an ``end_session_endpoint``. The ID token is checked for signature (the
provider's published keys), issuer, audience, expiry and the nonce of this login.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt

from fhirfus.errors import Unauthorized

TIMEOUT = 10.0


class OidcFailed(Unauthorized):
    def __init__(self, message: str) -> None:
        super().__init__(f"Login through the identity provider failed: {message}", "oidc")


@dataclass(frozen=True)
class Attempt:
    """What one login keeps between leaving for the provider and coming back (in a cookie)."""

    state: str
    nonce: str
    verifier: str

    @classmethod
    def new(cls) -> Attempt:
        return cls(secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48))

    @property
    def challenge(self) -> str:
        digest = hashlib.sha256(self.verifier.encode()).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def cookie(self) -> str:
        return f"{self.state}.{self.nonce}.{self.verifier}"

    @classmethod
    def from_cookie(cls, value: str | None) -> Attempt | None:
        parts = (value or "").split(".")
        return cls(*parts) if len(parts) == 3 and all(parts) else None


class Provider:
    """One identity provider, found through its discovery document (fetched on first use)."""

    def __init__(self, issuer: str, client_id: str, client_secret: str | None = None) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret

    @cached_property
    def metadata(self) -> dict[str, Any]:
        try:
            answer = httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=TIMEOUT)
            answer.raise_for_status()
            return answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise OidcFailed(f"the provider's configuration cannot be read ({exc.__class__.__name__})") from exc

    @cached_property
    def keys(self) -> jwt.PyJWKClient:
        return jwt.PyJWKClient(self.metadata["jwks_uri"], timeout=int(TIMEOUT))

    def authorization_url(self, redirect_uri: str, attempt: Attempt) -> str:
        query = {"response_type": "code", "client_id": self.client_id, "redirect_uri": redirect_uri,
                 "scope": "openid email", "state": attempt.state, "nonce": attempt.nonce,
                 "code_challenge": attempt.challenge, "code_challenge_method": "S256"}
        return f"{self.metadata['authorization_endpoint']}?{urlencode(query)}"

    def logout_url(self, after: str) -> str | None:
        """Where to end the person's session at the provider too (RP-initiated logout), coming back
        to ``after``; None when the provider has no ``end_session_endpoint`` (or cannot be asked)."""
        try:
            endpoint = self.metadata.get("end_session_endpoint")
        except OidcFailed:
            return None
        if not isinstance(endpoint, str) or not endpoint:
            return None
        query = urlencode({"client_id": self.client_id, "post_logout_redirect_uri": after})
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    def email_of(self, code: str, redirect_uri: str, attempt: Attempt) -> str:
        """Exchange the code; the verified email of the checked ID token."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "client_id": self.client_id, "code_verifier": attempt.verifier}
        auth = (self.client_id, self.client_secret) if self.client_secret else None
        try:
            answer = httpx.post(self.metadata["token_endpoint"], data=form, auth=auth, timeout=TIMEOUT)
            answer.raise_for_status()
            id_token = answer.json()["id_token"]
            key = self.keys.get_signing_key_from_jwt(id_token)
            claims = jwt.decode(id_token, key.key, algorithms=["RS256", "ES256", "PS256"], audience=self.client_id,
                                issuer=self.metadata.get("issuer", self.issuer), options={"require": ["exp", "iat"]})
        except (httpx.HTTPError, KeyError, ValueError, jwt.PyJWTError) as exc:
            raise OidcFailed(f"the provider's answer was refused ({exc.__class__.__name__})") from exc
        if claims.get("nonce") != attempt.nonce:
            raise OidcFailed("the ID token is not for this login (nonce)")
        email = claims.get("email")
        if not isinstance(email, str) or claims.get("email_verified") is False:
            raise OidcFailed("the provider gave no verified email")
        return email
