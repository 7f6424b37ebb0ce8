"""The console's plumbing: templates, the session cookie, CSRF, role checks, auditing.

Every page goes through ``page``: it finds the person from the session cookie (none: a redirect to
the login page), checks the role and, for a form, the CSRF token; a typed error becomes an HTML
page with the error's status and message (naming the field), never a 5xx; and the request is
audited under the person's name like any API request (``fhirfus.auth.audit``).
"""

from __future__ import annotations

import functools
import hmac
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from fhirfus.api.http import read_form
from fhirfus.auth import people
from fhirfus.auth.access import Access
from fhirfus.auth.audit import AuditRecord, RequestAudit
from fhirfus.errors import FhirError, Forbidden, InvalidRequest, PayloadTooLarge

COOKIE = "fhirfus_session"
HERE = Path(__file__).parent
TEMPLATES = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                        trim_blocks=True, lstrip_blocks=True)
#: Headers of every console page: no framing, no foreign scripts or styles, no caching of patient data.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Visit:
    """The person behind one console request, as the caller every interaction gets."""

    session: people.Session
    access: Access
    request: Request

    @property
    def person(self) -> people.Person:
        return self.session.person


class LoginRequired(Exception):
    """No live session: the browser is sent to the login page."""


def render(request: Request, template: str, status: int = 200, visit: Visit | None = None, **context: Any) -> Response:
    body = TEMPLATES.get_template(template).render(
        request=request, visit=visit, person=visit.person if visit else None,
        csrf=visit.session.csrf if visit else "", **context)
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


def secure_cookie(request: Request) -> bool:
    """Cookies are Secure when the console is reached over https (directly or as the proxy says)."""
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"


def set_session_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(COOKIE, token, max_age=int(people.SESSION_LIFETIME.total_seconds()), path="/app",
                        httponly=True, samesite="strict", secure=secure_cookie(request))


def current_session(request: Request) -> people.Session | None:
    return people.session_for(request.app.state.store, request.cookies.get(COOKIE))


def check_csrf(session: people.Session, form: Any) -> None:
    sent = str(form.get("csrf") or "")
    if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise Forbidden("The form is stale or was not sent by this console (CSRF token); reload the page", "csrf")


def check_origin(request: Request) -> None:
    """A browser's form post from another site is refused (``Origin`` names a different host): this
    also covers the login and setup forms, which have no session and hence no CSRF token yet."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host", request.url.netloc):
        raise Forbidden("This form was sent from another site", "Origin")
    if origin == "null":
        raise Forbidden("This form was sent from an opaque origin", "Origin")


Handler = Callable[..., Awaitable[Response]]


def page(*roles: str, form: bool = False, max_body: bool = False) -> Callable[[Handler], Handler]:
    """A console route for people of ``roles`` (all roles when none); ``form``: a POST whose form
    must carry the session's CSRF token (the handler gets ``visit`` and the parsed ``data``);
    ``max_body``: a body declared larger than ``FHIRFUS_MAX_BODY_BYTES`` is refused before it is read."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: Request, **kwargs: Any) -> Response:
            session = await run_in_threadpool(current_session, request)
            if session is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/app/login?next={quote(target)}", status_code=303)
            access = people.access_for(session.person)
            audit = RequestAudit(AuditRecord.of(access, request.scope, 0))
            visit = Visit(session, Access(access.client_id, access.role, access.site, access.grants, audit), request)
            try:
                if roles and session.person.role not in roles:
                    raise Forbidden(f"This page is for {' or '.join(roles)} accounts", "role")
                declared = request.headers.get("content-length", "")
                limit = request.app.state.settings.max_body_bytes
                if max_body and declared.isdigit() and int(declared) > limit:
                    raise PayloadTooLarge(f"The upload is larger than the {limit} bytes the server accepts", "file")
                if form:
                    check_origin(request)
                    data = await read_form(request)
                    check_csrf(session, data)
                    kwargs["data"] = data
                response = await handler(request, visit=visit, **kwargs)
            except FhirError as exc:
                response = error_page(request, exc, visit)
            if not audit.written:
                request.app.state.audit.record(AuditRecord.of(access, request.scope, response.status_code))
            return response

        # FastAPI reads the route's parameters from here: the handler's, without what ``page`` supplies
        signature = inspect.signature(handler)
        wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[p for name, p in signature.parameters.items() if name not in ("visit", "data")])
        return wrapper

    return decorate


def error_page(request: Request, exc: FhirError, visit: Visit | None) -> Response:
    fields = [e for issue in exc.issues for e in issue.expression]
    return render(request, "error.html", exc.status, visit, message=exc.message, fields=fields)


def form_text(data: Any, name: str, *, required: bool = True) -> str:
    value = str(data.get(name) or "").strip()
    if required and not value:
        raise InvalidRequest(f"'{name}' is required", name)
    return value
