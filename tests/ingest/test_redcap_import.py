"""REDCap longitudinal exports through ``fhirfus/ig/inbound/redcap.yaml``, on both databases, over HTTP.

The export is generated here in REDCap's raw layout (one row per record and event, coded radio
values, checkbox columns ``fus_ae___N``, demographics on the baseline row only, form-status columns
the mapping ignores). Expected counts are computed from the generated rows, not hard-coded.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import httpx

from fhirfus.domain import profiles, twstrs
from fhirfus.ingest.mapping.engine import map_rows
from fhirfus.ingest.mapping.spec import load_spec

TWSTRS = "https://fhirfus.org/fhir/CodeSystem/twstrs"
TARGET = "https://fhirfus.org/fhir/CodeSystem/mrgfus-target"
LATERALITY = "https://fhirfus.org/fhir/StructureDefinition/laterality"
PARAMETERS = ("fus_sonications", "fus_max_power", "fus_max_energy", "fus_max_temp", "fus_sdr", "fus_lesion_size")
IGNORED = ("demographics_complete", "fus_session_complete", "twstrs_complete")  # REDCap form status
Row = dict[str, str]


def spec_columns() -> list[str]:
    spec = load_spec("redcap")
    return [name for name, column in spec.columns.items() if not column.derive]


def twstrs_items() -> dict[str, tuple[str, int]]:
    """REDCap field → (TWSTRS linkId, maximum answer), read from the mapping and the Questionnaire."""
    items = twstrs.versions()[twstrs.DEFAULT_VERSION].definition.items
    spec = load_spec("redcap")
    return {name: (c.questionnaire_item, int(items[c.questionnaire_item].maximum))  # type: ignore[arg-type]
            for name, c in spec.columns.items() if c.questionnaire_item}


def assessment(seed: int, *, without: tuple[str, ...] = ()) -> Row:
    """TWSTRS answers within range (deterministic); ``without`` leaves fields blank (a partial response)."""
    row = {name: str((seed + i) % (top + 1)) for i, (name, (_, top)) in enumerate(twstrs_items().items())}
    row.update(dict.fromkeys(without, ""))
    if row["twstrs_sev_antero_retro"] not in ("", "0"):
        row["twstrs_sev_ar_direction"] = "2"
    return {**row, "twstrs_complete": "2"}


def session(target: str, side: str, *adverse: int) -> Row:
    checkboxes = {f"fus_ae___{n}": "1" if n in adverse else "0" for n in range(1, 10)}
    return {"fus_target": target, "fus_side": side, "fus_sonications": "12", "fus_max_power": "650",
            "fus_max_energy": "18000", "fus_max_temp": "57.5", "fus_sdr": "0.46", "fus_lesion_size": "4.5",
            "fus_session_complete": "2", **checkboxes}


def export_rows() -> list[Row]:
    """Three records over baseline, one or two sessions and follow-ups; one follow-up lacks the pain part."""
    pain = tuple(n for n in twstrs_items() if n.startswith("twstrs_pain_"))
    records = {
        "1001": ({"sex": "1", "dob": "1968-04-02", "cd_subtype": "1"}, [
            ("baseline_arm_1", "2022-01-10", assessment(3)),
            ("session_1_arm_1", "2022-02-01", session("3", "1", 1, 3)),
            ("followup_3m_arm_1", "2022-05-03", assessment(1)),
            ("followup_12m_arm_1", "2023-02-06", assessment(0)),
        ]),
        "1002": ({"sex": "2", "dob": "1975-11-20", "cd_subtype": "5"}, [
            ("baseline_arm_1", "2022-03-01", assessment(4)),
            ("session_1_arm_1", "2022-03-20", session("1", "2")),
            ("session_2_arm_1", "2022-09-12", session("2", "2", 2)),
            ("followup_1m_arm_1", "2022-10-14", assessment(2)),
            ("followup_6m_arm_1", "2023-03-15", assessment(1, without=pain)),
        ]),
        "1003": ({"sex": "1", "dob": "1981-07-30", "cd_subtype": "2"}, [
            ("baseline_arm_1", "2022-06-07", assessment(5)),
            ("session_1_arm_1", "2022-06-29", session("2", "3", 9)),
            ("followup_12m_arm_1", "2023-07-03", assessment(2)),
        ]),
    }
    header = spec_columns() + list(IGNORED)
    rows = []
    for record, (demographics, events) in records.items():
        for event, day, values in events:
            row = dict.fromkeys(header, "")
            baseline = {**demographics, "demographics_complete": "2"} if event.startswith("baseline") else {}
            row.update({"record_id": record, "redcap_event_name": event, "visit_date": day, **baseline, **values})
            rows.append(row)
    return rows


def write_export(path: Path, rows: list[Row]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def scores_of(row: Row) -> int:
    """Score Observations of one assessment: one per complete subscale, plus the total when all are."""
    complete = [all(row[n] for n, (link, _) in twstrs_items().items() if link.startswith(f"{part}."))
                for part in twstrs.SUBSCALES]
    return sum(complete) + all(complete)


def expected(rows: list[Row]) -> dict[str, int]:
    sessions = [r for r in rows if r["redcap_event_name"].startswith("session_")]
    assessments = [r for r in rows if r["redcap_event_name"].startswith(("baseline_", "followup_"))]
    return {
        "patients": len({r["record_id"] for r in rows}),
        "sessions": len(sessions),
        "vo-complex": sum(r["fus_target"] in ("2", "3") for r in sessions),
        "parameters": sum(bool(r[p]) for r in sessions for p in PARAMETERS),
        "adverse-events": sum(v == "1" for r in sessions for k, v in r.items() if k.startswith("fus_ae___")),
        "responses": len(assessments),
        "scores": sum(scores_of(r) for r in assessments),
    }


def run_import(database_url: str, site: str, path: Path, report: Path | None = None) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "fhirfus.cli", "import", "--mapping", "redcap", "--site", site, str(path)]
    if report:
        args += ["--report", str(report)]
    env = {**os.environ, "FHIRFUS_DATABASE_URL": database_url, "COLUMNS": "200"}
    return subprocess.run(args, check=False, env=env, capture_output=True, text=True, timeout=300)


def total(client: httpx.Client, path: str, **params: str) -> int:
    return client.get(path, params={**params, "_summary": "count"}).json()["total"]


def patients(client: httpx.Client, site: str) -> dict[str, dict]:
    """Imported patients by REDCap record_id."""
    system = f"https://fhirfus.org/fhir/sid/site-patient/{site}"
    found = client.get("/Patient", params={"identifier": f"{system}|", "_count": 100}).json()
    return {i["value"]: e["resource"] for e in found.get("entry", []) for i in e["resource"]["identifier"]
            if i["system"] == system}


# --- the mapping, in process ----------------------------------------------------------------------------


def test_every_resource_the_mapping_produces_conforms_to_its_claimed_profile() -> None:
    result = map_rows(load_spec("redcap"), export_rows(), "R")
    assert result.errors == []
    resources = [e["resource"] for b in result.bundles.values() for e in b["entry"]]
    claims = {r["resourceType"]: r["meta"].get("profile") for r in resources}
    assert claims["Procedure"] == [f"{profiles.BASE}mrgfus-procedure"]
    assert claims["QuestionnaireResponse"] == [f"{profiles.BASE}twstrs-questionnaire-response"]
    assert claims["Condition"] == [f"{profiles.BASE}cd-condition"]
    assert all(profiles.profile_issues(r) == [] for r in resources)


def test_visit_type_and_session_number_come_from_the_event_name() -> None:
    result = map_rows(load_spec("redcap"), export_rows(), "R")
    keys: dict[str, list[str]] = {}
    for bundle in result.bundles.values():
        for entry in bundle["entry"]:
            identifiers = entry["resource"].get("identifier", [])
            for identifier in identifiers if isinstance(identifiers, list) else [identifiers]:
                keys.setdefault(entry["resource"]["resourceType"], []).append(identifier["value"])
    assert sorted(keys["Procedure"]) == ["1001/session/1", "1002/session/1", "1002/session/2", "1003/session/1"]
    assert "1002/twstrs/followup_6m_arm_1" in keys["QuestionnaireResponse"]


def test_unknown_event_is_reported_on_its_derived_column() -> None:
    rows = export_rows()
    rows[1]["redcap_event_name"] = "screening_arm_1"
    result = map_rows(load_spec("redcap"), rows, "R")
    [error] = result.errors
    assert (error.line, error.column, error.value) == (3, "visit_type", "screening")
    assert "expected one of baseline, session, followup" in error.reason


# --- the import, over HTTP on both databases ------------------------------------------------------------


def test_export_imports_every_record_and_event(client: httpx.Client, server, tmp_path: Path, unique: str) -> None:
    site = f"R{unique}"
    rows = export_rows()
    result = run_import(server.database.url, site, write_export(tmp_path / "export.csv", rows))
    assert result.returncode == 0, result.stdout + result.stderr
    want = expected(rows)
    loaded = patients(client, site)
    assert sorted(loaded) == sorted({r["record_id"] for r in rows})
    assert (loaded["1001"]["gender"], loaded["1001"]["birthDate"]) == ("female", "1968-04-02")
    assert loaded["1002"]["gender"] == "male"
    ids = ",".join(p["id"] for p in loaded.values())
    sessions = client.get("/Procedure", params={"subject": ids, "_count": 100}).json()
    assert sessions["total"] == want["sessions"]
    targets = [c["code"] for e in sessions["entry"] for s in e["resource"]["bodySite"] for c in s["coding"]
               if c["system"] == TARGET]
    assert targets.count("vo-complex") == want["vo-complex"]
    assert total(client, "/AdverseEvent", subject=ids) == want["adverse-events"]
    assert total(client, "/QuestionnaireResponse", subject=ids) == want["responses"]
    codes = ",".join(f"{TWSTRS}|{c}" for c in ("total", *twstrs.SUBSCALES))
    assert total(client, "/Observation", subject=ids, code=codes) == want["scores"]
    assert total(client, "/Observation", subject=ids, category="procedure") == want["parameters"]
    assert total(client, "/Condition", subject=ids, code="http://hl7.org/fhir/sid/icd-10|G24.3") == want["patients"]
    first = client.get("/Procedure", params={"subject": f"Patient/{loaded['1001']['id']}"}).json()
    body_sites = first["entry"][0]["resource"]["bodySite"]
    assert [s["coding"][0]["code"] for s in body_sites] == ["pallidothalamic-tract", "vo-complex"]
    assert all(s["extension"][0]["url"] == LATERALITY for s in body_sites)


def test_second_import_changes_nothing(client: httpx.Client, server, tmp_path: Path, unique: str) -> None:
    site = f"R{unique}"
    path = write_export(tmp_path / "export.csv", export_rows())
    assert run_import(server.database.url, site, path).returncode == 0
    before = server.database.counts()
    again = run_import(server.database.url, site, path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 created, 0 updated" in " ".join(again.stdout.split() + again.stderr.split())
    assert server.database.counts() == before


def test_bad_cells_are_reported_by_line_and_column(client: httpx.Client, server, tmp_path: Path, unique: str) -> None:
    site = f"R{unique}"
    rows = export_rows()
    second_session = next(i for i, r in enumerate(rows) if r["redcap_event_name"] == "session_2_arm_1")
    last_followup = max(i for i, r in enumerate(rows) if r["record_id"] == "1003")
    rows[second_session]["fus_target"] = "4"
    rows[last_followup]["twstrs_pain_usual"] = "11"
    report = tmp_path / "report.csv"
    result = run_import(server.database.url, site, write_export(tmp_path / "export.csv", rows), report)
    assert result.returncode == 1
    errors = list(csv.DictReader(report.open(encoding="utf-8")))
    assert [(e["line"], e["column"], e["value"]) for e in errors] == [
        (str(second_session + 2), "fus_target", "4"), (str(last_followup + 2), "twstrs_pain_usual", "11")]
    assert all(e["reason"] for e in errors)
    assert sorted(patients(client, site)) == ["1001"]  # records with a bad cell are left out entirely
