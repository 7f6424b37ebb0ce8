"""One notification as an HTTP request to the Subscription's endpoint (R4 ``rest-hook``).

fhirfus follows R4 (subscription.html#rest-hook), not the R4B backport's notification Bundles:

- no payload (``channel.payload`` absent): ``POST [endpoint]`` without a body — the receiver
  learns that something matched and searches for it;
- ``full-resource`` (``channel.payload`` ``application/fhir+json``): ``PUT [endpoint]/[type]/[id]``
  with the version that matched;
- ``id-only`` (the backport's ``backport-payload-content`` extension on ``channel.payload``): the
  same ``PUT`` with only ``resourceType``, ``id`` and ``meta.versionId``.

Every request carries the Subscription's ``channel.header``s and ``X-Fhirfus-Subscription:
Subscription/[id]``. With ``FHIRFUS_SUBSCRIPTION_KEY`` set, it also carries
``X-Fhirfus-Signature: sha256=<hex HMAC-SHA256 of the body>`` under the Subscription's own key
(``signing_key``: derived from the server's key and the Subscription's id, so one receiver's key
tells nothing about another's; ``fhirfus subscription-secret ID`` prints it for the receiver).
Any answer but 2xx, a timeout or a refused connection is a failed delivery.
"""

from __future__ import annotations

import hashlib
import hmac
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import orjson

from fhirfus.addresses import is_public, pinned
from fhirfus.domain.subscription import FULL, ID_ONLY, JSON, NONE
from fhirfus.subscriptions.active import Active

SIGNATURE = "X-Fhirfus-Signature"
SUBSCRIPTION = "X-Fhirfus-Subscription"


class DeliveryFailed(Exception):
    """The endpoint did not take the notification (the message says why)."""


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes


def signing_key(server_key: str, subscription_id: str) -> str:
    """The key a Subscription's notifications are signed with (hex)."""
    return hmac.new(server_key.encode(), f"Subscription/{subscription_id}".encode(), hashlib.sha256).hexdigest()


def signature(key: str, body: bytes) -> str:
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def request_for(subscription: Active, res_type: str, res_id: str, version: int, content: dict | None,
                server_key: str | None) -> Request:
    channel = subscription.channel
    headers = dict(channel.headers)
    headers[SUBSCRIPTION] = f"Subscription/{subscription.id}"
    if channel.payload == NONE:
        method, url, body = "POST", channel.endpoint, b""
    else:
        method, url = "PUT", f"{channel.endpoint.rstrip('/')}/{res_type}/{res_id}"
        document = content if channel.payload == FULL and content is not None else \
            {"resourceType": res_type, "id": res_id, "meta": {"versionId": str(version)}}
        assert channel.payload in (FULL, ID_ONLY)
        body = orjson.dumps(document)
        headers["Content-Type"] = JSON
    if server_key:
        headers[SIGNATURE] = signature(signing_key(server_key, subscription.id), body)
    return Request(method, url, headers, body)


def private_target(url: str) -> bool:
    """Whether ``url``'s host is (or resolves to) an address that is not public (``addresses.is_public``:
    loopback, private, shared, link-local, reserved, multicast, or an IPv6 form embedding one)."""
    return not all(is_public(address) for address in _addresses(url))


def _addresses(url: str) -> list[str]:
    """What ``url``'s host resolves to, in the resolver's order (none when it does not resolve)."""
    try:
        return list(dict.fromkeys(str(info[4][0]) for info in socket.getaddrinfo(urlsplit(url).hostname or "", None)))
    except (OSError, UnicodeError):
        return []


def send(http: httpx.Client, request: Request, timeout: float, *, allow_private: bool) -> None:
    """Deliver, or raise ``DeliveryFailed`` — whatever the stored channel holds, so that a bad one
    ends in ``status`` ``error`` rather than in notifications retried for ever. Without
    ``allow_private`` the request goes to the public address that was checked (no second DNS lookup
    that could rebind the name to a private one)."""
    try:
        url, headers, extensions = request.url, request.headers, dict[str, str]()
        if not allow_private:
            addresses = _addresses(request.url)
            if not all(is_public(address) for address in addresses):
                raise DeliveryFailed(
                    f"{request.url} is a private or loopback address, which this server does not notify")
            if not addresses:
                raise DeliveryFailed(f"The host of {request.url} cannot be resolved")
            url, host, extensions = pinned(request.url, addresses[0])
            headers = {**request.headers, **host}
        answer = http.request(request.method, url, headers=headers, content=request.body, timeout=timeout,
                              extensions=extensions)
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:  # ValueError: a header it cannot encode
        raise DeliveryFailed(f"{request.method} {request.url} failed: {type(exc).__name__}: {exc}") from exc
    if not 200 <= answer.status_code < 300:
        raise DeliveryFailed(f"{request.method} {request.url} answered HTTP {answer.status_code}")
