"""The token request as RFC 6749 frames it: a form of parameters in, a JSON error body on failure.

Errors follow RFC 6749 §5.2 with RFC 7521 §4.2 / RFC 7523 §3.2 for client assertions: a request
that is malformed or lacks a parameter is ``invalid_request`` (400), any problem with the client's
authentication — its assertion, its key, the client itself — is ``invalid_client`` (401), a grant
other than ``client_credentials`` is ``unsupported_grant_type`` and scopes the client may not have
are ``invalid_scope`` (400). Rate limits answer 429 ``temporarily_unavailable`` with ``Retry-After``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

FORM_TYPE = "application/x-www-form-urlencoded"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
GRANT_TYPE = "client_credentials"
#: A token request has five parameters; a form of many more is not one.
MAX_FIELDS = 20
#: A client assertion is a few hundred bytes of claims and a signature.
MAX_ASSERTION_CHARS = 16 * 1024


@dataclass(frozen=True)
class OAuthError(Exception):
    """An RFC 6749 error answer of the token endpoint (not an OperationOutcome)."""

    error: str
    description: str
    status: int = 400
    retry_after: int = 0

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}

    def headers(self) -> dict[str, str]:
        headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        if self.retry_after:
            headers["Retry-After"] = str(self.retry_after)
        return headers


def invalid_request(description: str) -> OAuthError:
    return OAuthError("invalid_request", description)


def invalid_client(description: str) -> OAuthError:
    return OAuthError("invalid_client", description, 401)


def too_many(description: str, retry_after: int) -> OAuthError:
    return OAuthError("temporarily_unavailable", description, 429, retry_after)


@dataclass(frozen=True)
class TokenRequest:
    client_assertion: str
    scope: str
    client_id: str | None


def check_content_type(content_type: str | None) -> None:
    if (content_type or "").split(";")[0].strip().lower() != FORM_TYPE:
        raise invalid_request(f"send the parameters as an {FORM_TYPE} form")


def parse_form(body: bytes) -> dict[str, str]:
    """The form's parameters; each may appear once (RFC 6749 §3.2)."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True,
                          max_num_fields=MAX_FIELDS, errors="strict")
    except ValueError as exc:  # UnicodeDecodeError included
        raise invalid_request(f"the form cannot be read: {exc}") from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise invalid_request(f"{name} is repeated")
        form[name] = value
    return form


def token_request(form: dict[str, str], *, authorization_header: bool = False) -> TokenRequest:
    """The parameters of a SMART Backend Services token request, checked in RFC 6749's terms."""
    grant_type = form.get("grant_type")
    if not grant_type:
        raise invalid_request("grant_type is missing")
    if grant_type != GRANT_TYPE:
        raise OAuthError("unsupported_grant_type", f"grant_type {grant_type!r} is not supported: use {GRANT_TYPE}")
    if authorization_header or "client_secret" in form:
        raise invalid_request("authenticate with client_assertion only (no Authorization header, no client_secret)")
    assertion_type = form.get("client_assertion_type")
    if not assertion_type:
        raise invalid_request("client_assertion_type is missing")
    if assertion_type != ASSERTION_TYPE:
        raise invalid_client(f"client_assertion_type must be {ASSERTION_TYPE}")
    assertion = form.get("client_assertion")
    if not assertion:
        raise invalid_request("client_assertion is missing")
    if len(assertion) > MAX_ASSERTION_CHARS:
        raise invalid_request(f"client_assertion is longer than {MAX_ASSERTION_CHARS} characters")
    scope = form.get("scope", "").strip()
    if not scope:
        raise OAuthError("invalid_scope", "scope is missing")
    return TokenRequest(assertion, scope, form.get("client_id") or None)
