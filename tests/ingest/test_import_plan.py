"""An import as a plan on both databases: a site file is the site's truth for the patients it lists
(replace), or a partial file that only adds and updates (merge); the preview says every change
before anything is written; it refuses to mix a file into data it does not own."""

from __future__ import annotations

import csv
from pathlib import Path

import httpx
import pytest

from fhirfus.errors import Conflict
from fhirfus.ingest.plan import DEMO_GROUP_ID, Difference, commit_plan, plan_import
from fhirfus.store.repository import Store

REGISTRY = Path(__file__).resolve().parents[3] / "shared" / "data" / "site-registry"
SITE_A = REGISTRY / "example-site-a.csv"
SITE_B = REGISTRY / "example-site-b-with-errors.csv"
pytestmark = pytest.mark.skipif(not SITE_A.is_file(), reason=f"shared site registry files not found at {REGISTRY}")


def rows_of(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open(encoding="utf-8-sig")))


def write(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def imported(store: Store, site: str, path: Path, mode: str = "replace") -> None:
    plan = plan_import(store, "site-registry", site, [path], mode)
    assert plan.conflicts == []
    commit_plan(store, plan)


def patient_id(client: httpx.Client, site: str, number: str) -> str:
    bundle = client.get("/Patient", params={"identifier": f"https://fhirfus.org/fhir/sid/site-patient/{site}|{number}"}).json()
    return bundle["entry"][0]["resource"]["id"]


def assessments(client: httpx.Client, patient: str) -> list[str]:
    bundle = client.get("/QuestionnaireResponse", params={"subject": f"Patient/{patient}", "_count": 100}).json()
    return sorted(e["resource"]["authored"] for e in bundle.get("entry", []))


def follow_up(rows: list[dict[str, str]]) -> int:
    return next(i for i, r in enumerate(rows) if r["visit_type"] == "follow-up")


def test_a_corrected_visit_date_updates_the_assessment_instead_of_adding_one(
    client: httpx.Client, server, tmp_path: Path, unique: str,
) -> None:
    store, site = Store(server.database.engine), f"A{unique}"
    rows = rows_of(SITE_A)
    imported(store, site, SITE_A)
    index = follow_up(rows)
    number, old_date = rows[index]["site_patient_id"], rows[index]["visit_date"]
    patient = patient_id(client, site, number)
    before = assessments(client, patient)
    rows[index]["visit_date"] = old_date[:8] + ("28" if old_date[8:] != "28" else "27")  # same month: same order

    plan = plan_import(store, "site-registry", site, [write(tmp_path / "corrected.csv", rows)])
    visits = [(c.action, c.record, c.date) for c in plan.changes if c.kind == "twstrs"]
    assert visits == [("changed", "twstrs/follow-up/1", rows[index]["visit_date"])]
    [changed] = [c for c in plan.changes if c.kind == "twstrs"]
    assert Difference("authored", old_date, rows[index]["visit_date"]) in changed.differences
    assert f"authored: {old_date} → {rows[index]['visit_date']}" in changed.described()
    assert changed in plan.listed_changes()
    assert [key for key, status in plan.patients.items() if status == "changed"] == [number]
    commit_plan(store, plan)

    after = assessments(client, patient)
    assert len(after) == len(before)
    assert old_date not in after and rows[index]["visit_date"] in after
    changed = plan.changes[0]
    history = client.get(f"/QuestionnaireResponse/{changed.res_id}/_history").json()
    assert history["total"] == 2  # the old date is still in the history


def test_a_removed_follow_up_is_a_versioned_delete_and_takes_its_scores(
    client: httpx.Client, server, tmp_path: Path, unique: str,
) -> None:
    store, site = Store(server.database.engine), f"R{unique}"
    rows = rows_of(SITE_A)
    imported(store, site, SITE_A)
    number = rows[follow_up(rows)]["site_patient_id"]
    last = max(i for i, r in enumerate(rows) if r["site_patient_id"] == number and r["visit_type"] == "follow-up")
    plan = plan_import(store, "site-registry", site, [write(tmp_path / "fewer.csv", rows[:last] + rows[last + 1:])])
    assert [(c.action, c.kind, c.date) for c in plan.changes] == [("removed", "twstrs", rows[last]["visit_date"])]
    commit_plan(store, plan)
    removed = plan.changes[0].res_id
    assert client.get(f"/QuestionnaireResponse/{removed}").status_code == 410
    assert client.get(f"/QuestionnaireResponse/{removed}/_history").json()["total"] == 2
    scores = client.get("/Observation", params={"derived-from": f"QuestionnaireResponse/{removed}"}).json()
    assert not scores.get("entry")


def test_a_removed_row_removes_its_resources_and_merge_keeps_them(
    client: httpx.Client, server, tmp_path: Path, unique: str,
) -> None:
    store = Store(server.database.engine)
    rows = rows_of(SITE_A)
    session = next(i for i, r in enumerate(rows) if r["visit_type"] == "session")
    rows[session]["adverse_events"] = "headache;nausea"
    number = rows[session]["site_patient_id"]
    full = write(tmp_path / "full.csv", rows)
    partial = write(tmp_path / "partial.csv", rows[:session] + rows[session + 1:])
    for mode, expected_left in (("merge", 1), ("replace", 0)):
        site = f"{mode[0].upper()}{unique}"
        imported(store, site, full)
        patient = patient_id(client, site, number)
        plan = plan_import(store, "site-registry", site, [partial], mode)
        removed = {c.kind for c in plan.changes if c.action == "removed"}
        assert removed == ({"session", "parameter", "adverse-event"} if mode == "replace" else set())
        assert [c for c in plan.changes if c.action != "removed"] == []
        commit_plan(store, plan)
        sessions = client.get("/Procedure", params={"subject": f"Patient/{patient}", "date": rows[session]["visit_date"]}).json()
        assert len(sessions.get("entry", [])) == expected_left


def test_rejected_patients_are_held_back_and_keep_what_is_stored(
    client: httpx.Client, server, tmp_path: Path, unique: str,
) -> None:
    store, site = Store(server.database.engine), f"B{unique}"
    fixed = {"7": "1", "2022-02-30": "2022-02-28"}  # B001's two bad cells, corrected
    b001 = [{k: fixed.get(v, v) for k, v in r.items()} for r in rows_of(SITE_B) if r["site_patient_id"] == "B001"]
    imported(store, site, write(tmp_path / "clean.csv", b001))
    patient = patient_id(client, site, "B001")
    stored = assessments(client, patient)

    plan = plan_import(store, "site-registry", site, [SITE_B])
    assert [h.patient for h in plan.held_back] == ["B001", "B002", "B003"]
    held = plan.held_back[0]
    assert held.rejected_lines == (3, 6) and held.valid_lines == (2, 4, 5)
    assert "held back" in held.sentence()
    assert all(c.patient not in ("B001", "B002", "B003") for c in plan.changes)  # nothing of them changes
    commit_plan(store, plan)
    assert assessments(client, patient) == stored


def test_a_site_holding_the_demo_cohort_is_not_mixed_with_a_real_file(client: httpx.Client, server, unique: str) -> None:
    store, site = Store(server.database.engine), f"D{unique}"
    imported(store, site, SITE_A)
    existing = client.get(f"/Group/{DEMO_GROUP_ID}")
    group = existing.json() if existing.status_code == 200 else {
        "resourceType": "Group", "id": DEMO_GROUP_ID, "type": "person", "actual": True, "member": []}
    member = {"entity": {"reference": f"Patient/{patient_id(client, site, rows_of(SITE_A)[0]['site_patient_id'])}"}}
    assert client.put(f"/Group/{DEMO_GROUP_ID}", json={**group, "member": [*group.get("member", []), member]}).status_code in (200, 201)
    try:
        counts = server.database.counts()
        plan = plan_import(store, "site-registry", site, [SITE_A])
        assert any("demo cohort" in c for c in plan.conflicts)
        with pytest.raises(Conflict):
            commit_plan(store, plan)
        assert server.database.counts() == counts
        assert plan_import(store, "site-registry", site, [SITE_A], allow_demo=True).conflicts == []
    finally:
        client.put(f"/Group/{DEMO_GROUP_ID}", json=group)


def test_a_patient_stored_under_another_site_is_refused(client: httpx.Client, server, unique: str) -> None:
    store, site = Store(server.database.engine), f"E{unique}"
    number = rows_of(SITE_A)[0]["site_patient_id"]
    foreign = {"resourceType": "Patient", "identifier": [
        {"system": f"https://fhirfus.org/fhir/sid/site-patient/{site}", "value": number}],
        "meta": {"security": [{"system": "https://fhirfus.org/fhir/CodeSystem/site", "code": f"other{unique}"}]}}
    assert client.post("/Patient", json=foreign).status_code == 201
    counts = server.database.counts()
    plan = plan_import(store, "site-registry", site, [SITE_A])
    assert plan.conflicts == [f"patient {number} is stored with site {site}'s identifier but belongs to site "
                              f"other{unique}; refusing to merge it into this import"]
    with pytest.raises(Conflict):
        commit_plan(store, plan)
    assert server.database.counts() == counts


def test_a_preview_the_stored_data_no_longer_matches_is_not_committed(
    client: httpx.Client, server, tmp_path: Path, unique: str,
) -> None:
    store, site = Store(server.database.engine), f"F{unique}"
    rows = rows_of(SITE_A)
    imported(store, site, SITE_A)
    index = follow_up(rows)
    rows[index]["twstrs_pain_usual"] = str((int(rows[index]["twstrs_pain_usual"]) + 1) % 5)
    plan = plan_import(store, "site-registry", site, [write(tmp_path / "edited.csv", rows)])
    assert [c.action for c in plan.changes] == ["changed"]
    imported(store, site, tmp_path / "edited.csv")  # someone else commits the same change first
    with pytest.raises(Conflict, match="preview"):
        commit_plan(store, plan)


def test_the_same_file_again_changes_nothing_and_writes_nothing(server, unique: str) -> None:
    store, site = Store(server.database.engine), f"G{unique}"
    imported(store, site, SITE_A)
    counts = server.database.counts()
    plan = plan_import(store, "site-registry", site, [SITE_A])
    assert plan.changes == [] and plan.unchanged > 0
    assert commit_plan(store, plan).provenance is None
    assert server.database.counts() == counts


def test_a_commit_is_one_transaction_with_a_provenance(client: httpx.Client, server, unique: str) -> None:
    store, site = Store(server.database.engine), f"H{unique}"
    plan = plan_import(store, "site-registry", site, [SITE_A])
    committed = commit_plan(store, plan)
    assert committed.provenance is not None and committed.provenance.startswith("Provenance/")
    provenance = client.get("/" + committed.provenance.split("/_history")[0]).json()
    assert len(provenance["target"]) == len(plan.result.bundles)
    assert provenance["entity"][0]["what"]["identifier"]["value"] == plan.digest
    assert committed.added == plan.count("added") == len(plan.changes)


def test_a_site_imports_for_itself_only(client: httpx.Client, server, unique: str) -> None:
    from fhirfus.auth.access import Access, Grant
    from fhirfus.errors import Forbidden

    store, site = Store(server.database.engine), f"S{unique}"
    coordinator = Access(f"coordinator-{unique}", "site", site, (Grant("*", "cruds"),))
    with pytest.raises(Forbidden):
        plan_import(store, "site-registry", f"other{unique}", [SITE_A], caller=coordinator)
    plan = plan_import(store, "site-registry", site, [SITE_A], caller=coordinator)
    commit_plan(store, plan, coordinator)
    assert client.get("/Patient", params={"identifier": f"https://fhirfus.org/fhir/sid/site-patient/{site}|",
                                          "_summary": "count"}).json()["total"] == len(plan.result.bundles)
    again = plan_import(store, "site-registry", site, [SITE_A], caller=coordinator)
    assert again.changes == []
