"""The web console in a real browser (Debian's chromium driven by Playwright, no browser download):
a coordinator imports the error file, reads the rejected rows, fixes one and commits; a site's
coordinator never sees another site; an analyst runs an export and reads its report; every page
passes axe-core without serious or critical violations."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhirfus.store.repository import Store
from tests.api.test_console import ERROR_FILE, PASSWORD, analysis_job_running, bulk_job_elsewhere, person

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
AXE = Path(__file__).resolve().parents[1] / "browser" / "axe.min.js"
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (apt-get install -y chromium)"),
    pytest.mark.skipif(not ERROR_FILE.exists(), reason="the shared site files are absent"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def open_page(browser, secure_server) -> Iterator:
    """A new browser (own cookies) per call, on the console; axe is injected despite the page's CSP."""
    contexts = []

    def make():
        context = browser.new_context(base_url=secure_server.root, bypass_csp=True)
        context.set_default_timeout(30_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def log_in(page, email: str) -> None:
    """With the keyboard only: the fields are labelled, Enter submits."""
    page.goto("/app/patients")
    assert page.url.endswith("/app/login?next=/app/patients")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Password").press("Enter")
    page.wait_for_load_state()


def serious_violations(page) -> list[str]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


def upload(page, path: Path) -> None:
    page.goto("/app/imports")
    page.get_by_label("Site file").set_input_files(str(path))
    page.get_by_label("Mapping").select_option("site-registry")
    page.get_by_role("button", name="Check the file").click()
    page.wait_for_load_state()


def rejected_rows(page) -> list[list[str]]:
    return [[c.strip() for c in row.locator("td").all_inner_texts()] for row in page.locator("#rejected tbody tr").all()]


def patient_labels(page) -> set[str]:
    page.goto("/app/patients")
    return set(page.locator("main table a").all_inner_texts())


@pytest.fixture
def store(secure_server) -> Store:
    return Store(secure_server.database.engine)


def test_a_coordinator_reads_the_rejected_rows_fixes_one_and_commits(open_page, store: Store, tmp_path: Path) -> None:
    page = open_page()
    log_in(page, person(store, "site", f"S{uuid.uuid4().hex[:6]}"))
    upload(page, ERROR_FILE)
    rows = rejected_rows(page)
    assert ["14", "B003", "twstrs_pain_usual", "seven", "'seven' is not an integer"] in rows
    assert len(rows) == 5
    assert "B001, B002, B003" in page.locator(".warning").inner_text()  # held back, said in words
    assert serious_violations(page) == []
    page.get_by_role("button", name="Commit the valid patients").click()
    page.wait_for_load_state()
    assert "2 patients loaded, 3 held back" in page.locator("#outcome").inner_text()
    assert "B003" not in patient_labels(page)

    fixed = tmp_path / "example-site-b-fixed.csv"
    lines = ERROR_FILE.read_text().splitlines(keepends=True)
    lines[13] = lines[13].replace(",seven,", ",7,")  # line 14 of the file
    fixed.write_text("".join(lines))
    upload(page, fixed)
    assert len(rejected_rows(page)) == 4
    assert "Patients added: 1 (B003)" in page.locator("#changes").inner_text()
    page.get_by_role("button", name="Commit the valid patients").click()
    page.wait_for_load_state()
    assert "B003" in patient_labels(page)
    page.get_by_role("link", name="B003").click()
    page.wait_for_load_state()
    assert page.locator("svg[role=img] circle").count() >= 1  # the TWSTRS trajectory
    assert serious_violations(page) == []
    page.goto("/app/imports")
    assert page.get_by_role("link", name=f"rejected rows of {fixed.name}").count() == 1
    assert page.get_by_role("link", name=f"changes of {fixed.name}").count() == 1
    assert serious_violations(page) == []
    page.get_by_role("link", name="Data quality").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", level=1).inner_text().startswith("Data quality")
    assert serious_violations(page) == []


def test_a_corrected_visit_date_leaves_one_assessment_not_two(open_page, store: Store, tmp_path: Path) -> None:
    page = open_page()
    log_in(page, person(store, "site", f"S{uuid.uuid4().hex[:6]}"))
    clean = tmp_path / "site.csv"
    lines = ERROR_FILE.read_text().splitlines(keepends=True)
    rows_of_b004 = [line for line in lines if line.startswith("B004,")]
    clean.write_text(lines[0] + "".join(rows_of_b004))
    upload(page, clean)
    page.get_by_role("button", name="Commit the valid patients").click()
    page.goto("/app/patients")
    page.get_by_role("link", name="B004").click()
    before = page.get_by_role("table", name="TWSTRS totals").locator("tbody tr").count()
    follow_up = next(line for line in rows_of_b004 if ",follow-up," in line)
    date = follow_up.split(",")[4]
    corrected = tmp_path / "site-corrected.csv"
    corrected.write_text(clean.read_text().replace(follow_up, follow_up.replace(date, date[:8] + "01", 1)))
    upload(page, corrected)
    listed = page.get_by_role("table", name="Changes patient by patient").locator("tbody tr.changed")
    assert listed.count() == 1  # the follow-up, with its old and new date
    assert f"{date} → {date[:8]}01" in listed.inner_text()
    assert serious_violations(page) == []
    page.get_by_role("button", name="Commit the valid patients").click()
    page.goto("/app/patients")
    page.get_by_role("link", name="B004").click()
    assert page.get_by_role("table", name="TWSTRS totals").locator("tbody tr").count() == before


def test_a_site_coordinator_never_sees_another_site(open_page, store: Store) -> None:
    site = f"S{uuid.uuid4().hex[:6]}"
    ours = open_page()
    log_in(ours, person(store, "site", site))
    upload(ours, ERROR_FILE)
    ours.get_by_role("button", name="Commit the valid patients").click()
    ours.wait_for_load_state()
    ours.goto("/app/patients")
    ours.get_by_role("link", name="B004").click()
    ours.wait_for_load_state()
    patient_url = ours.url
    assert serious_violations(ours) == []

    theirs = open_page()
    log_in(theirs, person(store, "site", site + "X"))
    assert {"B004", "B005"} & patient_labels(theirs) == set()
    theirs.goto(patient_url)
    assert "B004" not in theirs.content()
    assert theirs.get_by_role("heading", level=1).inner_text() == "That did not work"
    assert serious_violations(theirs) == []


def test_an_analyst_runs_an_export_and_reads_the_report(open_page, store: Store) -> None:
    page = open_page()
    log_in(page, person(store, "analyst"))
    assert page.url.endswith("/app/cohorts") or "/app/login" not in page.url
    page.goto("/app/cohorts")
    assert serious_violations(page) == []
    page.get_by_label("All patients").check()
    page.get_by_role("button", name="Run the analysis export").click()
    page.wait_for_url("**/app/exports/*")
    for _ in range(120):  # the page refreshes itself while the job runs
        if "completed" in page.locator("#job-status").inner_text() or "failed" in page.locator("#job-status").inner_text():
            break
        page.wait_for_timeout(1000)
        page.reload()
    assert "completed" in page.locator("#job-status").inner_text(), page.content()[:2000]
    report = page.frame_locator("iframe[title='Analysis report']")
    assert report.locator("body").inner_text(timeout=30_000).strip() != ""
    assert page.get_by_role("link", name="statistics.json").count() == 1
    assert serious_violations(page) == []


def test_the_admin_pages_pass_the_accessibility_check(open_page, store: Store) -> None:
    page = open_page()
    log_in(page, person(store, "admin"))
    for path in ("/app/admin/people", "/app/admin/clients", "/app/admin/audit", "/app/admin/jobs", "/app/patients",
                 "/app/account", "/app/quality"):
        page.goto(path)
        assert page.locator("h1").count() == 1
        assert serious_violations(page) == [], path
    page.goto("/app/admin/people")
    page.get_by_label("Email").fill(f"new-{uuid.uuid4().hex[:6]}@example.org")
    page.get_by_label("Role").select_option("analyst")
    page.get_by_role("button", name="Add").click()
    assert "/app/setup?token=" in page.locator("#setup-link").inner_text()


def test_an_admin_cancels_a_running_export_from_the_jobs_page(open_page, store: Store, secure_server, tmp_path: Path) -> None:
    from fhirfus.bulk import jobs

    running = bulk_job_elsewhere(store, tmp_path)
    analysis = analysis_job_running(secure_server.app, "person:analyst@example.org")
    page = open_page()
    log_in(page, person(store, "admin"))
    page.goto("/app/admin/jobs")
    exports = page.get_by_role("table", name="Bulk Data exports")
    assert "40%, 1200 resources" in exports.locator(f"#bulk-{running}").inner_text()
    assert "views: 2/5 (40%)" in page.locator(f"#analysis-{analysis}").inner_text()
    assert serious_violations(page) == []
    page.get_by_role("button", name=f"Cancel export {running[:8]}").click()
    page.wait_for_load_state()
    assert running in page.get_by_role("status").inner_text()
    assert jobs.get(store, running).status == jobs.CANCELLED  # type: ignore[union-attr]
    assert page.locator(f"#bulk-{running}").count() == 0
    page.get_by_role("button", name=f"Cancel analysis {analysis[:8]}").click()
    page.wait_for_load_state()
    assert page.locator(f"#analysis-{analysis}").count() == 0
    assert serious_violations(page) == []
