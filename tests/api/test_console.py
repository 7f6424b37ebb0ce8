"""The web console at /app over HTTP: people log in, forms need the session's CSRF token, a site
coordinator previews and commits a site file, sites never see each other, actions are audited
under the person's name. (The same in a real browser: tests/api/test_console_browser.py.)"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from fhirfus.auth import people
from fhirfus.store.repository import Store

SITE_FILES = Path(__file__).resolve().parents[3] / "shared" / "data" / "site-registry"
ERROR_FILE = SITE_FILES / "example-site-b-with-errors.csv"
PASSWORD = "correct horse battery staple"


def person(store: Store, role: str, site: str | None = None) -> str:
    """A person with a password set through the one-time setup token; returns the email."""
    email = f"{role}-{uuid.uuid4().hex[:8]}@example.org"
    _, token = people.add_person(store, email, role, site)
    people.set_password(store, token, PASSWORD)
    return email


@contextmanager
def login(root: str, email: str) -> Iterator[httpx.Client]:
    """A browser-like session of this person (the cookie jar holds the session cookie)."""
    with httpx.Client(base_url=root, timeout=60) as http:
        answer = http.post("/app/login", data={"email": email, "password": PASSWORD})
        assert answer.status_code == 303, answer.text
        yield http


def csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


@pytest.fixture(scope="module")
def store(secure_server) -> Store:
    return Store(secure_server.database.engine)


@pytest.fixture
def site() -> str:
    return f"S{uuid.uuid4().hex[:6]}"


@pytest.fixture
def coordinator(secure_server, store: Store, site: str) -> Iterator[httpx.Client]:
    with login(secure_server.root, person(store, "site", site)) as http:
        yield http


def upload(http: httpx.Client, path: Path, content: bytes | None = None) -> httpx.Response:
    token = csrf(http.get("/app/imports"))
    return http.post("/app/imports", data={"csrf": token, "mapping": "site-registry"},
                     files={"file": (path.name, content if content is not None else path.read_bytes(), "text/csv")})


def test_a_page_without_a_session_leads_to_the_login_page(secure_server) -> None:
    answer = httpx.get(secure_server.root + "/app/patients")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/app/login?next=/app/patients"


def test_the_first_login_link_sets_a_password_once_and_logs_in(secure_server, store: Store) -> None:
    email = f"new-{uuid.uuid4().hex[:8]}@example.org"
    _, token = people.add_person(store, email, "analyst")
    with httpx.Client(base_url=secure_server.root) as http:
        assert email in http.get("/app/setup", params={"token": token}).text
        short = http.post("/app/setup", data={"token": token, "password": "short", "repeat": "short"})
        assert short.status_code == 400 and "at least 12 characters" in short.text
        done = http.post("/app/setup", data={"token": token, "password": PASSWORD, "repeat": PASSWORD})
        assert done.status_code == 303 and done.headers["location"] == "/app/cohorts"
        cookie = done.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/app" in cookie
        assert http.get("/app/cohorts").status_code == 200
        again = http.post("/app/setup", data={"token": token, "password": PASSWORD, "repeat": PASSWORD})
        assert again.status_code == 401 and "used or expired" in again.text


def test_the_password_is_stored_as_an_argon2id_hash(store: Store) -> None:
    from sqlalchemy import select

    from fhirfus.db.tables import auth_people

    email = person(store, "admin")
    with store.reading() as conn:
        stored = conn.execute(select(auth_people.c.password_hash).where(auth_people.c.email == email)).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


def test_a_wrong_password_and_an_unknown_email_get_the_same_answer(secure_server, store: Store) -> None:
    email = person(store, "admin")
    with httpx.Client(base_url=secure_server.root) as http:
        wrong = http.post("/app/login", data={"email": email, "password": "not the password"})
        unknown = http.post("/app/login", data={"email": "nobody@example.org", "password": "not the password"})
    assert wrong.status_code == unknown.status_code == 401
    assert "Email or password is wrong" in wrong.text and "Email or password is wrong" in unknown.text
    assert "set-cookie" not in wrong.headers


def test_a_form_without_the_sessions_csrf_token_changes_nothing(secure_server, store: Store) -> None:
    email = f"csrf-{uuid.uuid4().hex[:8]}@example.org"
    with login(secure_server.root, person(store, "admin")) as http:
        refused = http.post("/app/admin/people", data={"csrf": "forged", "email": email, "role": "analyst"})
        assert refused.status_code == 403 and "CSRF" in refused.text
        assert email not in {p.email for p in people.list_people(store)}
        added = http.post("/app/admin/people", data={"csrf": csrf(http.get("/app/admin/people")), "email": email,
                                                     "role": "analyst"})
        assert added.status_code == 200 and "/app/setup?token=" in added.text
    assert email in {p.email for p in people.list_people(store)}


def test_roles_open_only_their_pages(secure_server, store: Store, site: str) -> None:
    with login(secure_server.root, person(store, "analyst")) as http:
        assert http.get("/app/patients").status_code == 403
        assert http.get("/app/admin/audit").status_code == 403
    with login(secure_server.root, person(store, "site", site)) as http:
        assert http.get("/app/cohorts").status_code == 403
        assert http.get("/app/admin/people").status_code == 403


def test_logging_out_ends_the_session(coordinator: httpx.Client) -> None:
    token = csrf(coordinator.get("/app/patients"))
    cookie = coordinator.cookies.get("fhirfus_session")
    assert coordinator.post("/app/logout", data={"csrf": token}).status_code == 303
    stale = httpx.get(str(coordinator.base_url) + "/app/patients", cookies={"fhirfus_session": cookie or ""})
    assert stale.status_code == 303


@pytest.mark.skipif(not ERROR_FILE.exists(), reason="the shared site files are absent")
def test_a_coordinator_previews_rejected_rows_then_commits_the_valid_patients(coordinator: httpx.Client, site: str) -> None:
    preview = upload(coordinator, ERROR_FILE)
    assert preview.status_code == 200, preview.text
    rows = re.findall(r"<tr><td>(\d+)</td><td>([^<]*)</td><td>([^<]*)</td>", preview.text)
    assert rows, preview.text  # every rejected row: line, patient, column
    assert "Patients held back" in preview.text
    assert "Patients added:" in preview.text
    assert "/app/patients/" not in coordinator.get("/app/patients").text  # nothing stored before commit
    upload_id = re.search(r"/app/imports/([0-9a-f]{32})/commit", preview.text).group(1)  # type: ignore[union-attr]
    committed = coordinator.post(f"/app/imports/{upload_id}/commit", data={"csrf": csrf(preview)})
    assert committed.status_code == 200 and "patients loaded" in committed.text, committed.text
    listing = coordinator.get("/app/patients")
    held_back = {patient for _, patient, _ in rows}
    shown = set(re.findall(r'<a href="/app/patients/[^"]+">([^<]+)</a>', listing.text))
    assert shown and not shown & held_back
    history = coordinator.get("/app/imports")
    assert ERROR_FILE.name in history.text
    report = coordinator.get(f"/app/imports/{upload_id}/report.csv")
    assert report.status_code == 200 and report.text.startswith("line,patient,column,value,reason")
    again = coordinator.post(f"/app/imports/{upload_id}/commit", data={"csrf": csrf(preview)})
    assert again.status_code == 400 and "committed already" in again.text


def test_an_unreadable_file_gets_one_clear_message(coordinator: httpx.Client) -> None:
    answer = upload(coordinator, Path("visits.csv"), b"site_patient_id,visit_date\nB1,2022-01-01\n")
    assert answer.status_code == 400 and "columns missing for mapping" in answer.text
    latin = upload(coordinator, Path("latin.csv"), "site_patient_id\nJosé\n".encode("cp1252"))
    assert latin.status_code == 400 and "columns missing for mapping" in latin.text  # Windows-1252 is read
    xlsx = upload(coordinator, Path("visits.xlsx"), b"PK\x03\x04")
    assert xlsx.status_code == 400 and "visits.xlsx" in xlsx.text and "Traceback" not in xlsx.text
    doc = upload(coordinator, Path("visits.doc"), b"\xd0\xcf\x11\xe0")
    assert doc.status_code == 400 and ".xlsx" in doc.text


@pytest.mark.skipif(not ERROR_FILE.exists(), reason="the shared site files are absent")
def test_a_site_coordinator_never_sees_another_sites_patients_or_uploads(secure_server, store: Store, site: str,
                                                                       coordinator: httpx.Client) -> None:
    preview = upload(coordinator, ERROR_FILE)
    upload_id = re.search(r"/app/imports/([0-9a-f]{32})/commit", preview.text).group(1)  # type: ignore[union-attr]
    coordinator.post(f"/app/imports/{upload_id}/commit", data={"csrf": csrf(preview)})
    ours = re.findall(r'href="/app/patients/([^"]+)"', coordinator.get("/app/patients").text)
    assert ours
    with login(secure_server.root, person(store, "site", site + "X")) as other:
        listing = other.get("/app/patients")
        assert not set(re.findall(r'href="/app/patients/([^"]+)"', listing.text)) & set(ours)
        theirs, never = other.get(f"/app/patients/{ours[0]}"), other.get(f"/app/patients/{uuid.uuid4().hex}")
        assert theirs.status_code == never.status_code == 404
        assert theirs.text.replace(ours[0], "ID") == never.text.replace(never.url.path.rsplit("/", 1)[1], "ID")
        token = csrf(listing)
        assert other.post(f"/app/imports/{upload_id}/cancel", data={"csrf": token}).status_code == 404
        assert other.get(f"/app/imports/{upload_id}/report.csv").status_code == 404
        assert ERROR_FILE.name not in other.get("/app/imports").text


def test_console_actions_are_audited_under_the_persons_name(secure_server, store: Store) -> None:
    email = person(store, "admin")
    with login(secure_server.root, email) as http:
        http.get("/app/admin/clients")
        secure_server.app.state.audit.flush()
        trail = http.get("/app/admin/audit", params={"altid": f"person:{email}"})
    assert trail.status_code == 200
    assert f"person {email}" in trail.text and "GET /app/admin/clients" in trail.text


def test_a_person_sets_up_a_second_factor_and_then_logs_in_with_a_code(secure_server, store: Store) -> None:
    from fhirfus.auth import totp

    email = person(store, "analyst")
    with login(secure_server.root, email) as http:
        page = http.get("/app/account")
        secret = re.search(r'<code id="totp-secret">([A-Z2-7]+)</code>', page.text).group(1)  # type: ignore[union-attr]
        wrong = http.post("/app/account/totp", data={"csrf": csrf(page), "secret": secret, "code": "abc"})
        assert wrong.status_code == 400 and "code" in wrong.text
        on = http.post("/app/account/totp", data={"csrf": csrf(page), "secret": secret,
                                                  "code": totp.code_at(secret, totp.current_step())})
        assert on.status_code == 303 and "On: logging in asks" in http.get("/app/account").text
    with httpx.Client(base_url=secure_server.root) as http:
        assert http.post("/app/login", data={"email": email, "password": PASSWORD}).status_code == 401
        code = totp.code_at(secret, totp.current_step() + 1)
        assert http.post("/app/login", data={"email": email, "password": PASSWORD, "code": code}).status_code == 303


@pytest.mark.skipif(not ERROR_FILE.exists(), reason="the shared site files are absent")
def test_the_quality_page_names_missing_visits_out_of_window_visits_and_implausible_parameters(
        coordinator: httpx.Client, tmp_path: Path) -> None:
    lines = ERROR_FILE.read_text().splitlines(keepends=True)
    complete = [line for line in lines if line.startswith("B004,")]  # baseline, session, 3-, 6- and 12-month visits
    gappy = [line.replace("B004,", "Q001,", 1).replace(",0.49,", ",0.38,") for line in complete
             if ",baseline," not in line and "2022-09-26" not in line]
    gappy.append(gappy[-1].replace("2023-04-06", "2022-12-06"))  # day 250: in no follow-up window
    site_file = tmp_path / "quality.csv"
    site_file.write_text(lines[0] + "".join(complete) + "".join(gappy))
    preview = upload(coordinator, site_file)
    upload_id = re.search(r"/app/imports/([0-9a-f]{32})/commit", preview.text).group(1)  # type: ignore[union-attr]
    assert coordinator.post(f"/app/imports/{upload_id}/commit", data={"csrf": csrf(preview)}).status_code == 200
    page = coordinator.get("/app/quality")
    assert page.status_code == 200
    found = {(kind, patient) for kind, patient in re.findall(r"<tr><td>([^<]+)</td><td><a [^>]+>([^<]+)</a>", page.text)}
    assert found == {("missing baseline", "Q001"), ("missing 6-month follow-up", "Q001"),
                     ("out-of-window visit", "Q001"), ("implausible treatment parameter", "Q001")}
    assert "day 250 after the first session" in page.text and "skull-density-ratio" in page.text


def test_an_admin_disables_a_person_whose_session_ends_and_gives_a_new_link(secure_server, store: Store) -> None:
    admin, analyst = person(store, "admin"), person(store, "analyst")
    with login(secure_server.root, analyst) as theirs, login(secure_server.root, admin) as http:
        assert theirs.get("/app/cohorts").status_code == 200
        token = csrf(http.get("/app/admin/people"))
        assert http.post("/app/admin/people/state", data={"csrf": token, "email": analyst, "action": "disable"}
                         ).status_code == 200
        assert theirs.get("/app/cohorts").status_code == 303  # to the login page
        own = http.post("/app/admin/people/state", data={"csrf": token, "email": admin, "action": "disable"})
        assert own.status_code == 400
        http.post("/app/admin/people/state", data={"csrf": token, "email": analyst, "action": "enable"})
        reset = http.post("/app/admin/people/state", data={"csrf": token, "email": analyst, "action": "reset"})
        link = re.search(r'<code id="setup-link">[^<]*token=([^<]+)</code>', reset.text).group(1)  # type: ignore[union-attr]
    assert people.person_for_setup(store, link).email == analyst


def test_logins_are_audited_failed_ones_without_a_name(secure_server, store: Store) -> None:
    email = person(store, "admin")
    with httpx.Client(base_url=secure_server.root) as http:
        http.post("/app/login", data={"email": email, "password": "wrong password!"})
    with login(secure_server.root, email) as http:
        secure_server.app.state.audit.flush()
        trail = http.get("/app/admin/audit", params={"altid": f"person:{email}"})
        assert "POST /app/login" in trail.text and "HTTP 303" in trail.text
        refused = http.get("/app/admin/audit", params={"outcome": "4"})
        assert "POST /app/login" in refused.text and "wrong password" not in refused.text


def test_an_upload_beyond_the_body_limit_is_refused_and_kept_nowhere(server, site: str) -> None:
    """(The ``server`` fixture accepts bodies of 1 MiB.)"""
    store = Store(server.database.engine)
    with login(server.base.removesuffix("/fhir"), person(store, "site", site)) as http:
        answer = upload(http, Path("big.csv"), b"site_patient_id\n" + b"B1\n" * 400_000)
        assert answer.status_code == 413 and "larger than" in answer.text
        assert "big.csv" not in http.get("/app/imports").text


@pytest.mark.skipif(not ERROR_FILE.exists(), reason="the shared site files are absent")
def test_site_files_are_kept_only_until_committed_cancelled_or_abandoned(store: Store, site: str, tmp_path: Path) -> None:
    import os

    from fhirfus.api.console import imports

    coordinator = people.access_for(people.Person("p", "c@x.example", "site", site, True, None))  # type: ignore[arg-type]
    abandoned = imports.preview(store, coordinator, str(tmp_path), ERROR_FILE.name, ERROR_FILE.read_bytes(), "site-registry")
    folder = tmp_path / "console-imports" / abandoned.upload_id
    os.utime(folder / "upload.json", (0, 0))  # previewed long ago
    kept = imports.preview(store, coordinator, str(tmp_path), ERROR_FILE.name, ERROR_FILE.read_bytes(), "site-registry")
    assert not folder.exists()
    imports.commit(store, coordinator, str(tmp_path), kept.upload_id)
    left = {p.name for p in (tmp_path / "console-imports" / kept.upload_id).iterdir()}
    assert left == {"upload.json", "outcome.json", "report.csv", "changes.csv"}  # the patient file itself is gone
    assert [o.upload_id for o in imports.history(coordinator, str(tmp_path))] == [kept.upload_id]


def test_a_form_posted_from_another_site_is_refused_login_included(secure_server, store: Store) -> None:
    email = person(store, "admin")
    with httpx.Client(base_url=secure_server.root) as http:
        foreign = http.post("/app/login", data={"email": email, "password": PASSWORD},
                            headers={"Origin": "https://attacker.example"})
        assert foreign.status_code == 403 and "set-cookie" not in foreign.headers
        own = http.post("/app/login", data={"email": email, "password": PASSWORD}, headers={"Origin": secure_server.root})
        assert own.status_code == 303
        token = csrf(http.get("/app/admin/people"))
        forged = http.post("/app/admin/people", data={"csrf": token, "email": "o@x.example", "role": "analyst"},
                           headers={"Origin": "https://attacker.example"})
        assert forged.status_code == 403


SITE_A = SITE_FILES / "example-site-a.csv"


def committed_upload(http: httpx.Client, path: Path) -> str:
    preview = upload(http, path)
    assert preview.status_code == 200, preview.text
    upload_id = re.search(r"/app/imports/([0-9a-f]{32})/commit", preview.text).group(1)  # type: ignore[union-attr]
    done = http.post(f"/app/imports/{upload_id}/commit", data={"csrf": csrf(preview)})
    assert done.status_code == 200, done.text
    return upload_id


def listed_rows(preview: httpx.Response) -> list[tuple[str, ...]]:
    """The preview's changes patient by patient: (patient, action, record, date, line, what changes)."""
    table = re.search(r'<table aria-labelledby="listed-heading" id="listed">(.*?)</table>', preview.text, re.S)
    assert table, preview.text[:2000]
    return [tuple(cells) for cells in (re.findall(r"<td>([^<]*)</td>", row)
                                       for row in re.findall(r"<tr class=\"\w+\">(.*?)</tr>", table.group(1), re.S))]


@pytest.mark.skipif(not SITE_A.exists(), reason="the shared site files are absent")
def test_the_preview_lists_each_patients_visits_added_changed_old_to_new_and_removed(
        coordinator: httpx.Client, tmp_path: Path) -> None:
    lines = SITE_A.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    header, a001 = lines[0], [line for line in lines if line.startswith("A001,")]
    first = tmp_path / "first.csv"
    first.write_text(header + "".join(a001))
    committed_upload(coordinator, first)

    follow_up = next(line for line in a001 if ",follow-up," in line)
    old_date = follow_up.split(",")[4]
    new_date = old_date[:8] + ("27" if old_date[8:] != "27" else "26")  # same month: the same follow-up
    last = a001[-1]
    corrected = [line.replace(old_date, new_date) if line == follow_up else line for line in a001 if line != last]
    second = tmp_path / "second.csv"
    second.write_text(header + "".join(corrected))
    preview = upload(coordinator, second)
    rows = listed_rows(preview)
    changed = [r for r in rows if r[1] == "changed" and r[2].startswith("twstrs/")]
    assert len(changed) == 1 and changed[0][0] == "A001"
    assert f"authored: {old_date} → {new_date}" in changed[0][5].replace("&gt;", ">")
    removed = [r for r in rows if r[1] == "removed"]
    assert removed and {r[0] for r in removed} == {"A001"}
    assert any(r[3] == last.split(",")[4] for r in removed)  # the removed row's visit, by its date

    upload_id = re.search(r"/app/imports/([0-9a-f]{32})/commit", preview.text).group(1)  # type: ignore[union-attr]
    download = coordinator.get(f"/app/imports/{upload_id}/changes.csv")
    assert download.status_code == 200
    assert f"authored: {old_date} → {new_date}" in download.text
    assert all(f"removed,A001,{r[2]}," in download.text for r in removed)
    done = coordinator.post(f"/app/imports/{upload_id}/commit", data={"csrf": csrf(preview)})
    assert done.status_code == 200 and " removed," in done.text
    assert f"/app/imports/{upload_id}/changes.csv" in coordinator.get("/app/imports").text
    assert f"authored: {old_date} → {new_date}" in coordinator.get(f"/app/imports/{upload_id}/changes.csv").text


def audit_events_of(store: Store, email: str, path: str) -> list[dict]:
    from fhirfus.auth.access import SERVER
    from fhirfus.interactions.search import search_bundle

    bundle = search_bundle(store, SERVER, "", "AuditEvent", [("altid", f"person:{email}"), ("_count", "200")],
                           default_count=200, max_count=200)
    return [e["resource"] for e in bundle.get("entry", [])
            if any(item.get("description") == f"POST {path}" for item in e["resource"].get("entity", []))]


@pytest.mark.skipif(not SITE_A.exists(), reason="the shared site files are absent")
def test_an_import_commits_with_its_audit_event_and_a_failed_commit_leaves_neither(
        secure_server, store: Store, site: str, tmp_path: Path) -> None:
    email = person(store, "site", site)
    lines = SITE_A.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    header, a001 = lines[0], [line for line in lines if line.startswith("A001,")]
    with login(secure_server.root, email) as http:
        base = tmp_path / "base.csv"
        base.write_text(header + "".join(a001))
        committed_upload(http, base)
        fewer, other = tmp_path / "fewer.csv", tmp_path / "other.csv"
        fewer.write_text(header + "".join(a001[:-1]))
        other.write_text(header + "".join(a001[:-2] + a001[-1:]))
        stale, fresh = upload(http, fewer), upload(http, other)  # both checked against the same stored data
        stale_id, fresh_id = (re.search(r"/app/imports/([0-9a-f]{32})/commit", p.text).group(1)  # type: ignore[union-attr]
                              for p in (stale, fresh))

        done = http.post(f"/app/imports/{fresh_id}/commit", data={"csrf": csrf(fresh)})
        assert done.status_code == 200, done.text
        # written with the import, not queued after it: there before any flush of the audit writer
        [event] = audit_events_of(store, email, f"/app/imports/{fresh_id}/commit")
        assert event["outcomeDesc"] == "committed" and event["agent"][0]["who"]["display"] == f"person {email}"

        patients_before = http.get("/app/patients").text
        refused = http.post(f"/app/imports/{stale_id}/commit", data={"csrf": csrf(stale)})
        assert refused.status_code == 409 and "changed since" in refused.text
        assert http.get("/app/patients").text == patients_before
        assert audit_events_of(store, email, f"/app/imports/{stale_id}/commit") == []  # nothing committed with it
        secure_server.app.state.audit.flush()
        [failure] = audit_events_of(store, email, f"/app/imports/{stale_id}/commit")
        assert failure["outcome"] == "4" and failure["outcomeDesc"] == "HTTP 409"  # the attempt is on the trail


def bulk_job_elsewhere(store: Store, tmp_path: Path, *, failed: str | None = None) -> str:
    """A Bulk Data export another server process is running (its heartbeat is fresh, so this
    server's worker leaves it alone), 40 % done; ``failed``: it ended with this error instead."""
    from datetime import timedelta

    from fhirfus.bulk import jobs
    from fhirfus.bulk.params import ExportRequest

    job_id, owner = str(uuid.uuid4()), f"elsewhere-{uuid.uuid4().hex[:6]}"
    jobs.create(store, job_id, ExportRequest(types=("Patient",), client_id="integration-client"),
                "/fhir/$export?_type=Patient", owner)
    jobs.start(store, job_id, owner, str(tmp_path / job_id))
    jobs.beat(store, job_id, owner, 1200, 40)
    if failed:
        jobs.fail(store, job_id, owner, failed, jobs.now() + timedelta(hours=1))
    return job_id


def analysis_job_running(app, client: str) -> str:
    """An analysis export at its second of five steps, as the job registry keeps it on disk."""
    import os

    from fhirfus.analysis.jobs import JobState
    from fhirfus.api.analysis import analysis_jobs

    registry = analysis_jobs(app)
    moment = "2026-01-01T00:00:00.000Z"
    job = JobState(uuid.uuid4().hex, "running", "console:_all", "_all", "csv", None, moment, moment,
                   stage="views", done=2, total=5, pid=os.getpid(), client=client)
    registry._write(job)
    return job.id


def test_the_admin_sees_running_jobs_with_requester_progress_and_errors_and_cancels_them(
        secure_server, store: Store, site: str, tmp_path: Path) -> None:
    from fhirfus.bulk import jobs

    running, failed = bulk_job_elsewhere(store, tmp_path), bulk_job_elsewhere(store, tmp_path, failed="disk full")
    analysis = analysis_job_running(secure_server.app, "person:analyst@example.org")
    with login(secure_server.root, person(store, "site", site)) as coordinator:
        if SITE_A.exists():
            committed_upload(coordinator, SITE_A)
        assert coordinator.get("/app/admin/jobs").status_code == 403
        refused = coordinator.post(f"/app/admin/jobs/bulk/{running}/cancel", data={"csrf": csrf(coordinator.get("/app/patients"))})
        assert refused.status_code == 403 and jobs.get(store, running).status == jobs.RUNNING  # type: ignore[union-attr]
    with login(secure_server.root, person(store, "admin")) as admin:
        page = admin.get("/app/admin/jobs")
        assert page.status_code == 200
        row = re.search(rf'<tr id="bulk-{running}">(.*?)</tr>', page.text, re.S).group(1)  # type: ignore[union-attr]
        assert "integration-client" in row and "running" in row and "40%, 1200 resources" in row
        assert f"/app/admin/jobs/bulk/{running}/cancel" in row
        row = re.search(rf'<tr id="bulk-{failed}">(.*?)</tr>', page.text, re.S).group(1)  # type: ignore[union-attr]
        assert "failed" in row and "disk full" in row and "/cancel" not in row  # nothing to cancel
        row = re.search(rf'<tr id="analysis-{analysis}">(.*?)</tr>', page.text, re.S).group(1)  # type: ignore[union-attr]
        assert "person:analyst@example.org" in row and "views: 2/5 (40%)" in row
        if SITE_A.exists():
            assert f"<td>{site}</td><td>{SITE_A.name}</td>" in page.text  # the import history of every site

        forged = admin.post(f"/app/admin/jobs/bulk/{running}/cancel", data={"csrf": "forged"})
        assert forged.status_code == 403 and jobs.get(store, running).status == jobs.RUNNING  # type: ignore[union-attr]
        done = admin.post(f"/app/admin/jobs/bulk/{running}/cancel", data={"csrf": csrf(page)})
        assert done.status_code == 303
        assert jobs.get(store, running).status == jobs.CANCELLED  # type: ignore[union-attr]
        assert admin.post(f"/app/admin/jobs/bulk/{running}/cancel", data={"csrf": csrf(page)}).status_code == 404
        finished = admin.post(f"/app/admin/jobs/bulk/{failed}/cancel", data={"csrf": csrf(page)})
        assert finished.status_code == 400 and "not running" in finished.text
        assert jobs.get(store, failed).status == jobs.FAILED  # type: ignore[union-attr]
        assert admin.post(f"/app/admin/jobs/analysis/{analysis}/cancel", data={"csrf": csrf(page)}).status_code == 303
        after = admin.get("/app/admin/jobs").text
        assert f'id="analysis-{analysis}"' not in after and f'id="bulk-{running}"' not in after
        assert admin.post(f"/app/admin/jobs/analysis/{analysis}/cancel", data={"csrf": csrf(page)}).status_code == 404


@pytest.mark.parametrize("form", [{"email": "a\x00b@example.org", "password": "x"}, {"email": "x", "password": "\x00"},
                                  {"email\x00": "x"}])
def test_a_nul_in_a_login_or_setup_field_is_400_and_opens_nothing(secure_server, form: dict) -> None:
    """(PostgreSQL cannot hold a NUL: unchecked, the email reached a query and answered 500.)"""
    with httpx.Client(base_url=secure_server.root) as http:
        for path in ("/app/login", "/app/setup"):
            answer = http.post(path, data=form)
            assert answer.status_code == 400 and "set-cookie" not in answer.headers, answer.text


def test_a_nul_in_a_console_form_field_is_400_and_changes_nothing(secure_server, store: Store) -> None:
    with login(secure_server.root, person(store, "admin")) as http:
        token = csrf(http.get("/app/admin/people"))
        before = {p.email for p in people.list_people(store)}
        for data in ({"csrf": token, "email": "n\x00@example.org", "role": "analyst"},
                     {"csrf": token, "email": "n@example.org", "role": "analyst\x00"}):
            answer = http.post("/app/admin/people", data=data)
            assert answer.status_code == 400, answer.text
        assert {p.email for p in people.list_people(store)} == before
