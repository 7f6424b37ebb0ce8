"""The console's pages at ``/app``: login, the coordinator's patients and imports, the analyst's
cohorts and exports, the admin's people, clients and audit trail.

Server-rendered HTML (``templates/``), one stylesheet (``static/``), no script needed: forms post
back and answer with a page or a redirect (post/redirect/get). Reads go through the person's
``Access`` (``web.page``), so a site coordinator sees only the site's rows.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response

from fhirfus.analysis.deid.policy import available_policies
from fhirfus.analysis.source import ALL_PATIENTS, resolve_cohort
from fhirfus.api.analysis import analysis_jobs
from fhirfus.api.console import imports, quality, records
from fhirfus.api.console.web import (
    COOKIE,
    HERE,
    Visit,
    check_origin,
    current_session,
    error_page,
    form_text,
    page,
    render,
    secure_cookie,
    set_session_cookie,
)
from fhirfus.api.http import read_form
from fhirfus.auth import clients, oidc, people, totp
from fhirfus.auth.access import SERVER
from fhirfus.auth.audit import AuditRecord
from fhirfus.bulk import jobs as bulk_jobs
from fhirfus.bulk import service as bulk_export
from fhirfus.errors import FhirError, InvalidRequest, NotFound, PayloadTooLarge
from fhirfus.interactions.search import search_bundle

router = APIRouter(prefix="/app", include_in_schema=False)
STATIC = HERE / "static"
ASSETS = frozenset(path.name for path in STATIC.iterdir() if path.is_file() and not path.name.startswith("."))
HOME = {"site": "/app/patients", "analyst": "/app/cohorts", "admin": "/app/admin/people"}


def _next(target: str | None, fallback: str) -> str:
    """Only a path inside the console (no open redirect)."""
    return target if target and target.startswith("/app/") and not target.startswith("//") else fallback


# --- logging in ---------------------------------------------------------------------------------


def _oidc(request: Request) -> oidc.Provider | None:
    """The configured identity provider (FHIRFUS_OIDC_*), if any."""
    settings = request.app.state.settings
    if not (settings.oidc_issuer and settings.oidc_client_id):
        return None
    provider = getattr(request.app.state, "oidc", None)
    if provider is None:
        provider = request.app.state.oidc = oidc.Provider(settings.oidc_issuer, settings.oidc_client_id,
                                                          settings.oidc_client_secret)
    return provider


OIDC_COOKIE = "fhirfus_oidc"
#: Set beside the session cookie when the session was opened through the identity provider: logging
#: out then ends the provider's session too (it holds no secret; the session cookie is the session).
IDP_COOKIE = "fhirfus_idp"


def _callback_url(request: Request) -> str:
    return str(request.url_for("oidc_callback"))


@router.get("/login", name="login_form")
async def login_form(request: Request) -> Response:
    return render(request, "login.html", next=request.query_params.get("next", ""), oidc=_oidc(request) is not None)


@router.get("/login/oidc")
async def oidc_start(request: Request) -> Response:
    """Off to the identity provider; the attempt's state, nonce and PKCE verifier wait in a cookie
    (SameSite=Lax: the provider's redirect back is a cross-site navigation)."""
    provider = _oidc(request)
    if provider is None:
        raise NotFound("No identity provider is configured (FHIRFUS_OIDC_ISSUER)", "oidc")
    attempt = oidc.Attempt.new()
    try:
        target = await run_in_threadpool(provider.authorization_url, _callback_url(request), attempt)
    except FhirError as exc:
        return error_page(request, exc, None)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(OIDC_COOKIE, attempt.cookie(), max_age=600, path="/app/login", httponly=True, samesite="lax",
                        secure=secure_cookie(request))
    return response


@router.get("/login/oidc/callback", name="oidc_callback")
async def oidc_callback(request: Request) -> Response:
    """Back from the provider: check the state, exchange the code, open the account's session. The
    answer is a page that moves on by itself, so the new SameSite=Strict cookie is sent with the
    next request (a redirect would continue the provider's cross-site navigation)."""
    provider = _oidc(request)
    attempt = oidc.Attempt.from_cookie(request.cookies.get(OIDC_COOKIE))
    store = request.app.state.store
    try:
        if provider is None:
            raise NotFound("No identity provider is configured (FHIRFUS_OIDC_ISSUER)", "oidc")
        if attempt is None or request.query_params.get("state") != attempt.state:
            raise oidc.OidcFailed("this answer belongs to no login started here (state); start again")
        if "error" in request.query_params:
            raise oidc.OidcFailed(request.query_params.get("error_description") or request.query_params["error"])
        email = await run_in_threadpool(provider.email_of, request.query_params.get("code", ""),
                                        _callback_url(request), attempt)
        provision = people.provisioning(request.app.state.settings.oidc_auto_provision)
        person = await run_in_threadpool(people.person_for_email, store, email, provision)
        token, _ = await run_in_threadpool(people.open_session, store, person)
    except FhirError as exc:
        request.app.state.audit.record(AuditRecord.of(None, request.scope, exc.status))
        response = error_page(request, exc, None)
        response.delete_cookie(OIDC_COOKIE, path="/app/login")
        return response
    request.app.state.audit.record(AuditRecord.of(people.access_for(person), request.scope, 200))
    response = render(request, "continue.html", target=HOME[person.role])
    set_session_cookie(response, request, token)
    response.set_cookie(IDP_COOKIE, "1", max_age=int(people.SESSION_LIFETIME.total_seconds()), path="/app",
                        httponly=True, samesite="strict", secure=secure_cookie(request))
    response.delete_cookie(OIDC_COOKIE, path="/app/login")
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    """Email and password → a session cookie (SameSite=Strict, so no other site can post here with it)."""
    data = await read_form(request)
    store = request.app.state.store
    try:
        check_origin(request)
        person = await run_in_threadpool(people.authenticate, store, form_text(data, "email"),
                                         str(data.get("password") or ""), str(data.get("code") or ""))
        token, _ = await run_in_threadpool(people.open_session, store, person)
    except FhirError as exc:
        request.app.state.audit.record(AuditRecord.of(None, request.scope, exc.status))  # a failed login, unnamed
        return render(request, "login.html", exc.status, error=exc.message, email=str(data.get("email") or ""),
                      next=str(data.get("next") or ""))
    request.app.state.audit.record(AuditRecord.of(people.access_for(person), request.scope, 303))
    response = RedirectResponse(_next(str(data.get("next") or ""), HOME[person.role]), status_code=303)
    set_session_cookie(response, request, token)
    return response


@router.post("/logout")
@page(form=True)
async def logout(request: Request, visit: Visit, data: Any) -> Response:
    """End the console session; one opened through the identity provider is ended there too
    (RP-initiated logout) when the provider publishes an ``end_session_endpoint``."""
    await run_in_threadpool(people.close_session, request.app.state.store, request.cookies.get(COOKIE))
    target = "/app/login"
    provider = _oidc(request) if request.cookies.get(IDP_COOKIE) else None
    if provider is not None:
        login_page = str(request.url_for("login_form"))
        at_provider: str | None = await run_in_threadpool(provider.logout_url, login_page)
        target = at_provider or target
    response = RedirectResponse(target, status_code=303)
    response.delete_cookie(COOKIE, path="/app")
    response.delete_cookie(IDP_COOKIE, path="/app")
    return response


@router.get("/setup")
async def setup_form(request: Request) -> Response:
    """The first-login (or reset) link: choose a password."""
    token = request.query_params.get("token", "")
    try:
        person = await run_in_threadpool(people.person_for_setup, request.app.state.store, token)
    except FhirError as exc:
        return error_page(request, exc, None)
    return render(request, "setup.html", token=token, email=person.email, minimum=people.MIN_PASSWORD)


@router.post("/setup")
async def setup(request: Request) -> Response:
    data = await read_form(request)
    token = str(data.get("token") or "")
    store = request.app.state.store
    try:
        check_origin(request)
        password = str(data.get("password") or "")
        if password != str(data.get("repeat") or ""):
            raise InvalidRequest("The two passwords differ", "repeat")
        person = await run_in_threadpool(people.set_password, store, token, password)
        session_token, _ = await run_in_threadpool(people.open_session, store, person)
    except FhirError as exc:
        request.app.state.audit.record(AuditRecord.of(None, request.scope, exc.status))
        try:
            email = (await run_in_threadpool(people.person_for_setup, store, token)).email
        except FhirError:
            return error_page(request, exc, None)
        return render(request, "setup.html", exc.status, token=token, email=email, minimum=people.MIN_PASSWORD,
                      error=exc.message)
    request.app.state.audit.record(AuditRecord.of(people.access_for(person), request.scope, 303))
    response = RedirectResponse(HOME[person.role], status_code=303)
    set_session_cookie(response, request, session_token)
    return response


@router.get("/account")
@page()
async def account_page(request: Request, visit: Visit) -> Response:
    """The person's second factor: set it up (a new secret for the authenticator app) or turn it off."""
    secret = totp.new_secret()
    return render(request, "account.html", visit=visit, secret=secret,
                  uri=totp.provisioning_uri(secret, visit.person.email))


@router.post("/account/totp")
@page(form=True)
async def account_totp(request: Request, visit: Visit, data: Any) -> Response:
    store = request.app.state.store
    if data.get("action") == "off":
        await run_in_threadpool(people.disable_totp, store, visit.person)
    else:
        secret = form_text(data, "secret").upper()
        if len(secret) != 32 or not set(secret) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"):
            raise InvalidRequest("The secret is not one this page made; reload the page", "secret")
        await run_in_threadpool(people.enable_totp, store, visit.person, secret, form_text(data, "code"))
    return RedirectResponse("/app/account", status_code=303)


@router.get("")
async def home(request: Request) -> Response:
    session = await run_in_threadpool(current_session, request)
    return RedirectResponse(HOME[session.person.role] if session else "/app/login", status_code=303)


@router.get("/static/{name}")
async def static(name: str) -> Response:
    """One of the shipped assets, looked up by name among them: a requested name never reaches the
    file system (one too long for it was an OSError, a 500)."""
    if name not in ASSETS:
        raise NotFound(f"no console asset {name[:100]}", "name")
    return FileResponse(STATIC / name, headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"})


# --- coordinator --------------------------------------------------------------------------------


@router.get("/patients")
@page("site", "admin")
async def patient_list(request: Request, visit: Visit) -> Response:
    rows = await run_in_threadpool(records.patients, request.app.state.store, visit.access)
    return render(request, "patients.html", visit=visit, patients=rows)


@router.get("/patients/{patient_id}")
@page("site", "admin")
async def patient_page(request: Request, visit: Visit, patient_id: str) -> Response:
    found = await run_in_threadpool(records.patient_file, request.app.state.store, visit.access, patient_id)
    return render(request, "patient.html", visit=visit, patient=found, plot=records.trajectory_svg(found.scores))


@router.get("/quality")
@page("site", "admin")
async def quality_page(request: Request, visit: Visit) -> Response:
    found = await run_in_threadpool(quality.findings, request.app.state.store, visit.access)
    kinds: dict[str, int] = {}
    for finding in found:
        kinds[finding.kind] = kinds.get(finding.kind, 0) + 1
    return render(request, "quality.html", visit=visit, findings=found, kinds=kinds, windows=quality.FOLLOW_UPS)


def _export_dir(request: Request) -> str:
    return request.app.state.settings.export_dir


@router.get("/imports")
@page("site")
async def import_page(request: Request, visit: Visit) -> Response:
    done = await run_in_threadpool(imports.history, visit.access, _export_dir(request))
    return render(request, "imports.html", visit=visit, mappings=imports.mappings(), history=done)


@router.post("/imports")
@page("site", form=True, max_body=True)
async def import_preview(request: Request, visit: Visit, data: Any) -> Response:
    upload = data.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise InvalidRequest("Choose a site file to upload", "file")
    limit = request.app.state.settings.max_body_bytes
    content = await upload.read(limit + 1)
    if len(content) > limit:
        raise PayloadTooLarge(f"{upload.filename} is larger than the {limit} bytes the server accepts", "file")
    found = await run_in_threadpool(imports.preview, request.app.state.store, visit.access, _export_dir(request),
                                    upload.filename, content, form_text(data, "mapping"))
    return render(request, "preview.html", visit=visit, preview=found)


@router.post("/imports/{upload_id}/commit")
@page("site", form=True)
async def import_commit(request: Request, visit: Visit, data: Any, upload_id: str) -> Response:
    outcome = await run_in_threadpool(imports.commit, request.app.state.store, visit.access, _export_dir(request),
                                      upload_id, request.app.state.settings.base_url or "")
    return render(request, "committed.html", outcome.http_status, visit=visit, outcome=outcome)


@router.post("/imports/{upload_id}/cancel")
@page("site", form=True)
async def import_cancel(request: Request, visit: Visit, data: Any, upload_id: str) -> Response:
    await run_in_threadpool(imports.cancel, visit.access, _export_dir(request), upload_id)
    return RedirectResponse("/app/imports", status_code=303)


@router.get("/imports/{upload_id}/changes.csv")
@page("site")
async def import_changes(request: Request, visit: Visit, upload_id: str) -> Response:
    path = await run_in_threadpool(imports.changes_file, visit.access, _export_dir(request), upload_id)
    return FileResponse(path, media_type="text/csv", filename=f"import-{upload_id[:8]}-changes.csv")


@router.get("/imports/{upload_id}/report.csv")
@page("site")
async def import_report(request: Request, visit: Visit, upload_id: str) -> Response:
    path = await run_in_threadpool(imports.report_file, visit.access, _export_dir(request), upload_id)
    return FileResponse(path, media_type="text/csv", filename=f"import-{upload_id[:8]}-report.csv")


# --- analyst ------------------------------------------------------------------------------------


def _cohorts(store: Any) -> list[dict[str, Any]]:
    """The cohorts by name and size only: the export reads Groups as the server (``resolve_cohort``),
    and an analyst sees no member."""
    bundle = search_bundle(store, SERVER, "", "Group", [("type", "person"), ("actual", "true"), ("_count", "1000")],
                           default_count=1000, max_count=1000)
    found = [{"id": ALL_PATIENTS, "name": "All patients", "size": None}]
    for entry in bundle.get("entry", []):
        group = entry["resource"]
        found.append({"id": group["id"], "name": group.get("name") or group["id"],
                      "size": group.get("quantity", len(group.get("member") or []))})
    return found


@router.get("/cohorts")
@page("analyst", "admin")
async def cohort_list(request: Request, visit: Visit) -> Response:
    found = await run_in_threadpool(_cohorts, request.app.state.store)
    jobs = await run_in_threadpool(_jobs, request, visit.access.client_id)
    return render(request, "cohorts.html", visit=visit, cohorts=found, policies=available_policies(), jobs=jobs)


def _jobs(request: Request, client: str | None) -> list[Any]:
    """Analysis jobs, newest first: the person's own (``client``), or everyone's for the admin's list."""
    jobs = analysis_jobs(request.app)
    found = []
    for folder in jobs.root.iterdir() if jobs.root.exists() else ():
        try:
            job = jobs.get(folder.name)
        except FhirError:
            continue
        if client is None or job.client == client:
            found.append(job)
    return sorted(found, key=lambda j: j.created, reverse=True)


@router.post("/cohorts/export")
@page("analyst", "admin", form=True)
async def cohort_export(request: Request, visit: Visit, data: Any) -> Response:
    from fhirfus.analysis.export import output_format, prepare  # pandas & co. load on first use

    group_id = form_text(data, "cohort")
    fmt = output_format(str(data.get("format") or "csv"))
    policy = str(data.get("policy") or "") or None
    store = request.app.state.store

    def check() -> None:
        prepare(policy, request.app.state.settings.deid_key)
        resolve_cohort(store, group_id)

    await run_in_threadpool(check)
    request_url = f"console:{group_id}?{urlencode({'_outputFormat': fmt, 'policy': policy or ''})}"
    job = analysis_jobs(request.app).submit(request_url, group_id, fmt, policy, visit.access.client_id)
    return RedirectResponse(f"/app/exports/{job.id}", status_code=303)


def _own_job(request: Request, visit: Visit, job_id: str) -> Any:
    job = analysis_jobs(request.app).get(job_id)
    if job.client != visit.access.client_id:
        raise NotFound(f"No analysis job {job_id}", "job")
    return job


@router.get("/exports/{job_id}")
@page("analyst", "admin")
async def export_page(request: Request, visit: Visit, job_id: str) -> Response:
    job = await run_in_threadpool(_own_job, request, visit, job_id)
    running = job.status in ("accepted", "running")
    response = render(request, "export.html", visit=visit, job=job, running=running,
                      report=next((f["name"] for f in job.files if f["name"].endswith(".html")), None))
    if running:
        response.headers["Refresh"] = "2"  # the page follows the job without a script
    return response


@router.get("/exports/{job_id}/{name}")
@page("analyst", "admin")
async def export_file(request: Request, visit: Visit, job_id: str, name: str) -> Response:
    await run_in_threadpool(_own_job, request, visit, job_id)
    path, media_type = analysis_jobs(request.app).file(job_id, name)
    headers = {"X-Content-Type-Options": "nosniff"}
    if name.endswith(".html"):  # shown inside the export page, with no script and no way out of its frame
        headers["Content-Security-Policy"] = "sandbox; frame-ancestors 'self'"
        return FileResponse(path, media_type=media_type, headers=headers)
    return FileResponse(path, media_type=media_type, filename=name, headers=headers)


# --- admin --------------------------------------------------------------------------------------


@router.get("/admin/people")
@page("admin")
async def people_page(request: Request, visit: Visit) -> Response:
    everyone = await run_in_threadpool(people.list_people, request.app.state.store)
    return render(request, "people.html", visit=visit, people=everyone, roles=("site", "analyst", "admin"))


def setup_link(request: Request, token: str) -> str:
    return f"{str(request.base_url).rstrip('/')}/app/setup?token={token}"


@router.post("/admin/people")
@page("admin", form=True)
async def people_add(request: Request, visit: Visit, data: Any) -> Response:
    store = request.app.state.store
    person, token = await run_in_threadpool(
        people.add_person, store, form_text(data, "email"), form_text(data, "role"),
        form_text(data, "site", required=False) or None)
    everyone = await run_in_threadpool(people.list_people, store)
    return render(request, "people.html", visit=visit, people=everyone, roles=("site", "analyst", "admin"),
                  added=person, link=setup_link(request, token))


@router.post("/admin/people/state")
@page("admin", form=True)
async def people_state(request: Request, visit: Visit, data: Any) -> Response:
    """Disable or enable a person, or make a new first-login link (a forgotten password)."""
    store = request.app.state.store
    email, action = form_text(data, "email"), form_text(data, "action")
    link = None
    if action == "reset":
        link = setup_link(request, await run_in_threadpool(people.reset_link_token, store, email))
    elif action in ("disable", "enable"):
        if action == "disable" and email.lower() == visit.person.email:
            raise InvalidRequest("You cannot disable your own account", "email")
        await run_in_threadpool(people.set_enabled, store, email, action == "enable")
    else:
        raise InvalidRequest("action must be reset, disable or enable", "action")
    everyone = await run_in_threadpool(people.list_people, store)
    return render(request, "people.html", visit=visit, people=everyone, roles=("site", "analyst", "admin"),
                  reset=email if link else None, link=link)


@router.get("/admin/clients")
@page("admin")
async def clients_page(request: Request, visit: Visit) -> Response:
    found = await run_in_threadpool(clients.all_clients, request.app.state.store)
    return render(request, "clients.html", visit=visit, clients=found)


@router.get("/admin/jobs")
@page("admin")
async def jobs_page(request: Request, visit: Visit) -> Response:
    """Everything running or recently run: Bulk Data exports, analysis exports, site imports."""
    store = request.app.state.store
    analysis = await run_in_threadpool(_jobs, request, None)
    exports = await run_in_threadpool(bulk_jobs.recent, store)
    done = await run_in_threadpool(imports.all_history, _export_dir(request))
    return render(request, "jobs.html", visit=visit, jobs=analysis, exports=exports, imports=done,
                  active=bulk_jobs.ACTIVE, cancelled=request.query_params.get("cancelled", ""))


@router.post("/admin/jobs/bulk/{job_id}/cancel")
@page("admin", form=True)
async def bulk_job_cancel(request: Request, visit: Visit, data: Any, job_id: str) -> Response:
    """Stop a running Bulk Data export (its worker notices at its next page and drops its files)."""
    store = request.app.state.store
    job = await run_in_threadpool(bulk_jobs.get, store, job_id)
    if job is None or job.status == bulk_jobs.CANCELLED:
        raise NotFound(f"No export job {job_id}", "job")
    if job.status not in bulk_jobs.ACTIVE:
        raise InvalidRequest(f"Export job {job_id} is {job.status}, not running; there is nothing to cancel", "job")
    await run_in_threadpool(bulk_export.cancel, store, visit.access, job_id)
    return RedirectResponse(f"/app/admin/jobs?cancelled={job_id}", status_code=303)


@router.post("/admin/jobs/analysis/{job_id}/cancel")
@page("admin", form=True)
async def analysis_job_cancel(request: Request, visit: Visit, data: Any, job_id: str) -> Response:
    """Stop a running analysis export (it stops at its next step; its files are removed)."""
    jobs = analysis_jobs(request.app)
    job = await run_in_threadpool(jobs.get, job_id)
    if job.status not in ("accepted", "running"):
        raise InvalidRequest(f"Analysis job {job_id} is {job.status}, not running; there is nothing to cancel", "job")
    await run_in_threadpool(jobs.delete, job_id)
    return RedirectResponse(f"/app/admin/jobs?cancelled={job_id}", status_code=303)


AUDIT_FILTERS = ("altid", "date", "outcome", "subtype")


def _audit_rows(store: Any, visit: Visit, filters: dict[str, str]) -> list[dict[str, str]]:
    params = [(k, v) for k, v in filters.items() if v]
    bundle = search_bundle(store, visit.access, "", "AuditEvent", [*params, ("_sort", "-date"), ("_count", "200")],
                           default_count=200, max_count=200)
    rows = []
    for entry in bundle.get("entry", []):
        event = entry["resource"]
        agent = (event.get("agent") or [{}])[0]
        for item in event.get("entity") or [{}]:
            query = item.get("query")
            rows.append({
                "when": event.get("recorded", ""), "who": (agent.get("who") or {}).get("display", ""),
                "what": item.get("description", ""),
                "query": base64.b64decode(query).decode(errors="replace") if query else "",
                "outcome": event.get("outcomeDesc", event.get("outcome", "")),
                "address": (agent.get("network") or {}).get("address", ""),
            })
    return rows


@router.get("/admin/audit")
@page("admin")
async def audit_page(request: Request, visit: Visit) -> Response:
    filters = {k: request.query_params.get(k, "").strip() for k in AUDIT_FILTERS}
    if filters["date"] and not filters["date"][:2].isalpha():
        filters["date"] = "ge" + filters["date"]
    rows = await run_in_threadpool(_audit_rows, request.app.state.store, visit, filters)
    return render(request, "audit.html", visit=visit, rows=rows,
                  filters={**filters, "date": filters["date"].removeprefix("ge")})


def static_files() -> list[Path]:
    return sorted(STATIC.iterdir())
