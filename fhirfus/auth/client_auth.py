"""Who sends a token request: the registered client whose key signed the assertion."""

from __future__ import annotations

import time
from collections.abc import Callable

from fhirfus.auth import clients
from fhirfus.auth.assertion import CheckedClaims, check_claims, claimed_client, key_for, parse, verify_signature
from fhirfus.auth.jwks import InvalidJwks, KeySet, registered_key_set
from fhirfus.auth.oauth import TokenRequest, invalid_client
from fhirfus.store.repository import Store


class ClientAuthenticator:
    def __init__(self, store: Store, now: Callable[[], float] = time.time) -> None:
        self.store = store
        self.now = now

    def authenticate(self, request: TokenRequest, token_url: str) -> tuple[clients.Client, CheckedClaims]:
        """The client and its assertion's claims, or ``OAuthError`` ``invalid_client`` saying why not."""
        assertion = parse(request.client_assertion)
        client_id = claimed_client(assertion)
        if request.client_id is not None and request.client_id != client_id:
            raise invalid_client(f"client_id {request.client_id!r} is not the assertion's iss {client_id!r}")
        client = clients.find(self.store, client_id)
        if client is None:
            raise invalid_client(f"unknown client {client_id!r}")
        verify_signature(assertion, key_for(assertion, self._keys(client)))
        return client, check_claims(assertion, token_url, self.now())

    @staticmethod
    def _keys(client: clients.Client) -> KeySet:
        try:
            return registered_key_set(client.jwks)
        except InvalidJwks as exc:
            raise invalid_client(f"the client's registered keys cannot be used: {exc}") from exc
