"""Who sends a token request: the registered, enabled client whose key signed the assertion."""

from __future__ import annotations

import time
from collections.abc import Callable

from fhirfus.auth import clients
from fhirfus.auth.assertion import CheckedClaims, check_claims, claimed_client, key_for, parse, verify_signature
from fhirfus.auth.jwks import InvalidJwks, KeySet, registered_key_set
from fhirfus.auth.jwks_remote import JwksUnavailable, RemoteKeySets
from fhirfus.auth.oauth import TokenRequest, invalid_client
from fhirfus.store.repository import Store


class ClientAuthenticator:
    def __init__(self, store: Store, remote_keys: RemoteKeySets | None = None,
                 now: Callable[[], float] = time.time) -> None:
        self.store = store
        self.remote_keys = remote_keys or RemoteKeySets()
        self.now = now

    def authenticate(self, request: TokenRequest, token_url: str) -> tuple[clients.Client, CheckedClaims]:
        """The client and its assertion's claims, or ``OAuthError`` ``invalid_client`` saying why not.

        The client's status is read from the database on every token request, so a disabled
        client is refused at once; it is told so only after its signature verified.
        """
        assertion = parse(request.client_assertion)
        client_id = claimed_client(assertion)
        if request.client_id is not None and request.client_id != client_id:
            raise invalid_client(f"client_id {request.client_id!r} is not the assertion's iss {client_id!r}")
        client = clients.find(self.store, client_id)
        if client is None:
            raise invalid_client(f"unknown client {client_id!r}")
        verify_signature(assertion, key_for(assertion, self._keys(client, assertion.kid)))
        if not client.enabled:
            raise invalid_client("client is disabled")
        return client, check_claims(assertion, token_url, self.now())

    def _keys(self, client: clients.Client, kid: str | None) -> KeySet:
        try:
            if client.jwks_url is None:
                return registered_key_set(client.jwks)
            keys = self.remote_keys.keys(client.jwks_url)
            if kid is not None and keys.by_kid(kid) is None and kid not in keys.unusable:  # rotated? fetch again
                keys = self.remote_keys.refetched(client.jwks_url) or keys
            return keys
        except InvalidJwks as exc:
            raise invalid_client(f"the client's registered keys cannot be used: {exc}") from exc
        except JwksUnavailable as exc:
            raise invalid_client(f"the client's JWKS is not available: {exc}") from exc
