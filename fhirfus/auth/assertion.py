"""Client assertions (RFC 7523 §3, SMART Backend Services): JWTs a client signs with its own key.

Checked in an order that names the first problem precisely: the JWT's structure, its header
(``alg``, ``kid``), who claims to send it (``iss`` = ``sub``), the key the header names among the
client's keys, the signature, then every claim's type and value (RFC 7519: ``exp``/``iat``/``nbf``
are numbers, ``jti`` a string, ``aud`` a string or a list of strings). Every failure is an
``OAuthError`` ``invalid_client`` (RFC 7523 §3.2) whose description names the claim or header
parameter at fault; no input makes these functions raise anything else.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

import orjson

from fhirfus.auth.jwks import ALGORITHMS, KeySet, VerificationKey
from fhirfus.auth.oauth import invalid_client

#: How far ahead ``exp`` may be (SMART: "no more than five minutes in the future").
MAX_AHEAD = 300
#: How far ahead of this server's clock ``iat`` and ``nbf`` may be (the client's clock may run fast).
CLOCK_SKEW = 60
MAX_JTI = 200
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


@dataclass(frozen=True)
class Assertion:
    """A client assertion taken apart; ``claims`` are what the client says until the signature is checked."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes

    @property
    def alg(self) -> str:
        return str(self.header["alg"])

    @property
    def kid(self) -> str | None:
        return self.header.get("kid")


@dataclass(frozen=True)
class CheckedClaims:
    expires: float
    jti: str


def _decoded(part: str, what: str) -> bytes:
    if not _BASE64URL.fullmatch(part):
        raise invalid_client(f"client_assertion {what} is not base64url")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError) as exc:
        raise invalid_client(f"client_assertion {what} is not base64url") from exc


def _json_object(part: str, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(_decoded(part, what))
    except orjson.JSONDecodeError as exc:
        raise invalid_client(f"client_assertion {what} is not JSON") from exc
    if not isinstance(value, dict):
        raise invalid_client(f"client_assertion {what} is not a JSON object")
    return value


def parse(token: str) -> Assertion:
    """The assertion's parts, with its header checked: ``alg`` RS384 or ES384, ``kid`` a string."""
    parts = token.split(".")
    if len(parts) != 3:
        raise invalid_client("client_assertion is not a JWT (three base64url parts separated by dots)")
    header = _json_object(parts[0], "header")
    claims = _json_object(parts[1], "payload")
    signature = _decoded(parts[2], "signature")
    alg = header.get("alg")
    if alg is None:
        raise invalid_client("alg is missing from the client_assertion header")
    if not isinstance(alg, str):
        raise invalid_client("alg must be a string")
    if alg not in ALGORITHMS:
        raise invalid_client(f"alg {alg!r} is not accepted: client assertions are signed {' or '.join(ALGORITHMS)}")
    if "kid" in header and not isinstance(header["kid"], str):
        raise invalid_client("kid must be a string")
    if "crit" in header:
        raise invalid_client("crit header parameters are not supported")
    return Assertion(header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature)


def _string(claims: dict[str, Any], name: str) -> str:
    if name not in claims:
        raise invalid_client(f"{name} is missing")
    value = claims[name]
    if not isinstance(value, str):
        raise invalid_client(f"{name} must be a string")
    if not value:
        raise invalid_client(f"{name} is empty")
    return value


def claimed_client(assertion: Assertion) -> str:
    """The client the assertion claims to come from: ``iss`` and ``sub`` both name it."""
    issuer = _string(assertion.claims, "iss")
    subject = _string(assertion.claims, "sub")
    if issuer != subject:
        raise invalid_client(f"iss and sub must both be the client_id (iss {issuer!r}, sub {subject!r})")
    return issuer


def key_for(assertion: Assertion, keys: KeySet) -> VerificationKey:
    """The client's key the assertion names (``kid``, required when the client has several keys),
    registered for the algorithm the assertion uses."""
    kid = assertion.kid
    if kid is None:
        if len(keys.keys) != 1:
            count = f"{len(keys.keys)} keys" if keys.keys else "no usable key"
            raise invalid_client(f"kid is missing: this client has {count}, the header must name one")
        key = keys.keys[0]
    else:
        found = keys.by_kid(kid)
        if found is None:
            if kid in keys.unusable:
                raise invalid_client(f"kid {kid!r} names a key fhirfus cannot use: {keys.unusable[kid]}")
            raise invalid_client(f"kid {kid!r} names no key of this client")
        key = found
    if key.alg != assertion.alg:
        raise invalid_client(f"alg {assertion.alg!r} does not match key {key.name}, which is registered for {key.alg}")
    return key


def verify_signature(assertion: Assertion, key: VerificationKey) -> None:
    if not key.verifies(assertion.signing_input, assertion.signature):
        raise invalid_client(f"signature does not verify with key {key.name} ({key.alg})")


def _number(claims: dict[str, Any], name: str) -> float:
    if name not in claims:
        raise invalid_client(f"{name} is missing")
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid_client(f"{name} must be a number (seconds since 1970-01-01T00:00:00Z)")
    return float(value)


def _optional_number(claims: dict[str, Any], name: str) -> float | None:
    return _number(claims, name) if name in claims else None


def _audiences(claims: dict[str, Any]) -> list[str]:
    if "aud" not in claims:
        raise invalid_client("aud is missing")
    audience = claims["aud"]
    if isinstance(audience, str):
        return [audience]
    if isinstance(audience, list) and audience and all(isinstance(a, str) for a in audience):
        return audience
    raise invalid_client("aud must be a string or a non-empty list of strings")


def check_claims(assertion: Assertion, token_url: str, now: float) -> CheckedClaims:
    """The claims of a verified assertion: types first, then values against ``token_url`` and ``now``."""
    claims = assertion.claims
    expires = _number(claims, "exp")
    issued = _optional_number(claims, "iat")
    not_before = _optional_number(claims, "nbf")
    audiences = _audiences(claims)
    jti = _string(claims, "jti")
    if len(jti) > MAX_JTI:
        raise invalid_client(f"jti is longer than {MAX_JTI} characters")
    if expires <= now:
        raise invalid_client(f"client_assertion has expired (exp is {now - expires:.0f} s in the past)")
    if expires > now + MAX_AHEAD:
        raise invalid_client(f"exp is more than 5 minutes ahead ({expires - now:.0f} s; at most {MAX_AHEAD})")
    if not_before is not None and not_before > now + CLOCK_SKEW:
        raise invalid_client(f"client_assertion is not valid yet (nbf is {not_before - now:.0f} s ahead)")
    if issued is not None and issued > now + CLOCK_SKEW:
        raise invalid_client(f"iat is {issued - now:.0f} s in the future")
    if token_url not in audiences:
        raise invalid_client(f"aud must be the token endpoint {token_url}")
    return CheckedClaims(expires, jti)
