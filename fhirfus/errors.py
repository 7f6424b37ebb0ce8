"""Typed errors of fhirfus.

Every layer raises one of these; the API turns them into an ``OperationOutcome`` in exactly one
place (``fhirfus.api.errors``). Each error knows its HTTP status, its OperationOutcome issue code
and, where it can, the FHIRPath expression of the element at fault.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Issue:
    """One ``OperationOutcome.issue``."""

    diagnostics: str
    code: str = "invalid"
    severity: str = "error"
    expression: tuple[str, ...] = ()

    def to_fhir(self) -> dict:
        issue: dict = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            issue["expression"] = list(self.expression)
        return issue


class FhirError(Exception):
    """Base error: a message, optional element expression(s), or a list of issues."""

    status: int = 400
    issue_code: str = "invalid"

    def __init__(
        self,
        message: str,
        expression: str | tuple[str, ...] | None = None,
        *,
        issues: list[Issue] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        if issues:
            self.issues = issues
        else:
            expr = (expression,) if isinstance(expression, str) else tuple(expression or ())
            self.issues = [Issue(message, self.issue_code, "error", expr)]


class InvalidRequest(FhirError):
    """Malformed request: bad JSON, bad parameter value, wrong resourceType, id mismatch (400)."""

    status = 400
    issue_code = "invalid"


class InvalidResource(FhirError):
    """The resource fails basic FHIR validation: structure, datatypes, required bindings (400)."""

    status = 400
    issue_code = "invalid"


class BusinessRuleViolation(FhirError):
    """The resource breaks a fhirfus profile or domain rule (422)."""

    status = 422
    issue_code = "business-rule"


class Unauthorized(FhirError):
    status = 401
    issue_code = "login"


class Forbidden(FhirError):
    status = 403
    issue_code = "forbidden"


class NotFound(FhirError):
    """Unknown resource type, unknown id or unknown version (404)."""

    status = 404
    issue_code = "not-found"


class MethodNotAllowed(FhirError):
    status = 405
    issue_code = "not-supported"


class NotAcceptable(FhirError):
    """The client asked for a format fhirfus cannot produce (406)."""

    status = 406
    issue_code = "not-supported"


class Conflict(FhirError):
    """Concurrent modification detected inside the transaction (409)."""

    status = 409
    issue_code = "conflict"


class Gone(FhirError):
    """The resource was deleted (410)."""

    status = 410
    issue_code = "deleted"


class PreconditionFailed(FhirError):
    """``If-Match`` did not match, or conditional criteria matched several resources (412)."""

    status = 412
    issue_code = "conflict"


class PayloadTooLarge(FhirError):
    status = 413
    issue_code = "too-costly"


class UriTooLong(FhirError):
    """The request URL is longer than the server reads (414)."""

    status = 414
    issue_code = "too-costly"


class UnsupportedMediaType(FhirError):
    status = 415
    issue_code = "not-supported"


class TooManyRequests(FhirError):
    status = 429
    issue_code = "throttled"


class NotImplementedYet(FhirError):
    """A FHIR feature fhirfus does not implement (501), so clients are told rather than misled."""

    status = 501
    issue_code = "not-supported"
