"""De-identification of the analysis export: nothing identifying leaves, pseudonyms, intervals, k.

The planted-identifier tests run over HTTP on both databases; the others call the export on a
small SQLite cohort (the policy logic does not depend on the database).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
import uuid
from datetime import date
from pathlib import Path

import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from fhirfus.analysis.deid.policy import (
    DeidentificationUnavailable,
    PolicyError,
    ViewColumn,
    age_band,
    check_policy,
    load_policy,
    namespace_for,
    zip3,
)
from fhirfus.analysis.export import run_analysis
from fhirfus.analysis.views import analysis_views
from fhirfus.db import migrate
from fhirfus.db.engine import make_engine
from fhirfus.db.tables import deid_crosswalk, resources
from fhirfus.domain.conformance import load_conformance
from fhirfus.domain.synthetic_cohort import cohort_rows, write_site_file
from fhirfus.ig import folder
from fhirfus.ingest.site_import import import_files
from fhirfus.store.repository import Store

KEY_A = "key-a-0123456789abcdefghijkl"
KEY_B = "key-b-0123456789abcdefghijkl"
ASYNC = {"Prefer": "respond-async"}
FHIR_JSON = {"Content-Type": "application/fhir+json"}
SITE_PATIENT = "https://fhirfus.org/fhir/sid/site-patient/{site}|"


# --- planted identifiers, over HTTP -----------------------------------------------------------


def _plant(client: httpx.Client, site: str) -> list[str]:
    """Give the site's patients names, phones, addresses, identifiers and free text; return them all."""
    planted: list[str] = []
    bundle = client.get("/Patient", params={"identifier": SITE_PATIENT.format(site=site), "_count": 100}).json()
    for n, entry in enumerate(bundle["entry"]):
        patient = entry["resource"]
        secrets = {
            "family": f"Quixotezebul{n}", "given": f"Anastasiaplant{n}", "phone": f"+41 44 555 {n:02d} 77",
            "email": f"planted.person{n}@example.org", "line": f"{n + 17} Rue du Planté", "city": f"Plantville{n}",
            "postal": "03601" if n == 0 else f"8{n:02d}10", "mrn": f"MRN-PLANT-{n:05d}{site}",
            "text": f"Seen by Dr Plantinga on rounds {n}",
        }
        patient["name"] = [{"family": secrets["family"], "given": [secrets["given"]]}]
        patient["telecom"] = [{"system": "phone", "value": secrets["phone"]}, {"system": "email", "value": secrets["email"]}]
        patient["address"] = [{"line": [secrets["line"]], "city": secrets["city"], "state": "CO",
                               "postalCode": secrets["postal"], "country": "US"}]
        patient["identifier"].append({"system": "urn:oid:1.2.3.4.5", "value": secrets["mrn"]})
        patient["text"] = {"status": "generated", "div": f"<div xmlns=\"http://www.w3.org/1999/xhtml\">{secrets['text']}</div>"}
        updated = client.put(f"/Patient/{patient['id']}", json=patient, headers=FHIR_JSON)
        assert updated.status_code == 200, updated.text
        conditions = client.get("/Condition", params={"subject": f"Patient/{patient['id']}"}).json()
        for item in conditions.get("entry", []):
            condition = item["resource"]
            condition["note"] = [{"text": f"Free text about {secrets['family']} {n}"}]
            condition["code"]["text"] = f"Torticollis of {secrets['given']}"
            assert client.put(f"/Condition/{condition['id']}", json=condition, headers=FHIR_JSON).status_code == 200
        planted += [patient["id"], *[v for k, v in secrets.items() if k != "postal"]]
        planted.append(secrets["postal"])
    return planted


def _file_texts(client: httpx.Client, manifest: dict) -> dict[str, str]:
    """Every output file as text; Parquet both as raw bytes and read back into CSV text."""
    texts = {}
    for output in manifest["output"]:
        body = client.get(output["url"]).content
        texts[output["url"]] = body.decode("latin-1")
        if output["url"].endswith(".parquet"):
            texts[output["url"] + "#table"] = pq.read_table(io.BytesIO(body)).to_pandas().to_csv(index=False)
    return texts


@pytest.fixture(scope="module")
def planted(server, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str]]:
    """A Group of three imported patients carrying planted identifiers; (group id, planted values)."""
    unique = uuid.uuid4().hex[:10]
    site = f"PL{unique}"
    rows = list(cohort_rows(3, seed=11, prefix=f"S{unique}-"))
    path = write_site_file(tmp_path_factory.mktemp("planted") / "site.csv", rows)
    assert import_files(Store(server.database.engine), "site-registry", site, [path]).ok
    with server.client() as client:
        planted = _plant(client, site)
        ids = client.get("/Patient", params={"identifier": SITE_PATIENT.format(site=site)}).json()
        members = [{"entity": {"reference": f"Patient/{e['resource']['id']}"}} for e in ids["entry"]]
        group = client.post("/Group", json={"resourceType": "Group", "type": "person", "actual": True,
                                            "member": members}, headers=FHIR_JSON).json()
    planted += sorted({r["birth_date"] for r in rows} | {r["visit_date"] for r in rows} | {r["site_patient_id"] for r in rows})
    planted += [d.replace("-", "") for d in {r["birth_date"] for r in rows}]
    return group["id"], planted


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_planted_identifiers_dates_and_free_text_appear_in_no_output_file(
    planted: tuple[str, list[str]], client: httpx.Client, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    group, values = planted
    kick = client.get(f"/Group/{group}/$analysis-export", params={"_outputFormat": fmt}, headers=ASYNC)
    status = kick.headers["Content-Location"]
    deadline = time.monotonic() + 30
    while (done := client.get(status)).status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert done.status_code == 200, done.text
    texts = _file_texts(client, done.json())
    assert len(texts) >= 5
    leaks = [(value, url) for url, text in texts.items() for value in values if value in text]
    assert leaks == []
    patients_text = next(t for u, t in texts.items() if "patients" in u and (fmt == "csv" or u.endswith("#table")))
    assert set(pd.read_csv(io.StringIO(patients_text), dtype=str)["zip3"]) == {"000", "801", "802"}
    client.delete(status)


# --- unit-level cohort ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, list[dict[str, str]], Path]:
    load_conformance()
    root = tmp_path_factory.mktemp("analysis-deid")
    engine = make_engine(f"sqlite:///{root / 'fhirfus.db'}")
    migrate.upgrade(engine)
    store = Store(engine)
    rows = list(cohort_rows(8, seed=5))
    assert import_files(store, "site-registry", "DE", [write_site_file(root / "site.csv", rows)]).ok
    yield store, rows, root
    engine.dispose()


def _export(store: Store, out: Path, key: str, policy: str | None = None) -> Path:
    run_analysis(store, None, out, "csv", policy, key=key)
    return out


@pytest.fixture(scope="module")
def exports(cohort) -> dict[str, Path]:
    """The cohort exported twice under key A, once under key B and once with the pooled policy."""
    store, _, root = cohort
    return {
        "a": _export(store, root / "a", KEY_A), "a-again": _export(store, root / "a-again", KEY_A),
        "b": _export(store, root / "b", KEY_B), "pooled": _export(store, root / "pooled", KEY_A, "safe-harbor-pooled"),
    }


def _patients(directory: Path) -> pd.DataFrame:
    return pd.read_csv(directory / "patients.csv", dtype=str, keep_default_na=False)


def _crosswalk(store: Store, key: str) -> dict[str, str]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(deid_crosswalk.c.patient_id, deid_crosswalk.c.pseudonym)
                            .where(deid_crosswalk.c.namespace == namespace_for(key))).all()
    return dict(rows)


def _site_ids(store: Store) -> dict[str, str]:
    """Server Patient id → site patient number (what a site would call the patient)."""
    with store.engine.connect() as conn:
        rows = conn.execute(select(resources.c.res_id, resources.c.content).where(resources.c.res_type == "Patient")).all()
    return {res_id: content["identifier"][0]["value"] for res_id, content in rows}


def test_same_key_gives_the_same_pseudonyms(exports: dict[str, Path]) -> None:
    first, again = _patients(exports["a"]), _patients(exports["a-again"])
    assert list(first["pseudonym"]) == list(again["pseudonym"])
    assert first.equals(again)


def test_another_key_gives_unrelated_pseudonyms(cohort, exports: dict[str, Path]) -> None:
    store, _, _ = cohort
    under_a = set(_patients(exports["a"])["pseudonym"])
    under_b = set(_patients(exports["b"])["pseudonym"])
    assert len(under_a) == len(under_b) == 8
    assert under_a.isdisjoint(under_b)
    a, b = _crosswalk(store, KEY_A), _crosswalk(store, KEY_B)
    assert set(a) == set(b) and all(a[p] != b[p] for p in a)


def test_pseudonyms_are_random_codes_not_derived_from_identifiers(cohort, exports: dict[str, Path]) -> None:
    store, _, _ = cohort
    pseudonyms = _patients(exports["a"])["pseudonym"]
    site_ids = _site_ids(store)
    assert all(p.startswith("FUS-") and len(p) == 14 for p in pseudonyms)
    assert not any(s in p or p[4:] in s for p in pseudonyms for s in [*site_ids, *site_ids.values()])


def test_day_intervals_survive_as_offsets_from_the_first_session(cohort, exports: dict[str, Path]) -> None:
    store, rows, _ = cohort
    assessments = pd.read_csv(exports["a"] / "assessments.csv")
    pseudonym_of = {site_id: _crosswalk(store, KEY_A)[pid] for pid, site_id in _site_ids(store).items()}
    for site_id in {r["site_patient_id"] for r in rows}:
        visits = [r for r in rows if r["site_patient_id"] == site_id]
        first = min(date.fromisoformat(r["visit_date"]) for r in visits if r["visit_type"] == "session")
        expected = sorted((date.fromisoformat(r["visit_date"]) - first).days for r in visits if r["visit_type"] != "session")
        got = sorted(assessments.loc[assessments["pseudonym"] == pseudonym_of[site_id], "day"])
        assert got == expected


def test_default_policy_reports_the_smallest_equivalence_class_without_suppressing(exports: dict[str, Path]) -> None:
    patients = _patients(exports["a"])
    dictionary = pd.read_csv(exports["a"] / "dictionary.csv", dtype=str, keep_default_na=False)
    k = int(dictionary.loc[dictionary["column"] == "k_anonymity", "value"].item())
    assert k == patients.groupby(["site", "sex", "age_band", "cd_subtype"]).size().min()
    assert "*" not in set(patients[["site", "sex", "age_band", "cd_subtype"]].to_numpy().ravel())


def test_pooled_policy_drops_the_site_and_suppresses_below_k(cohort, exports: dict[str, Path]) -> None:
    _, rows, _ = cohort
    patients = _patients(exports["pooled"])
    assert "site" not in patients and "zip3" not in patients
    classes = patients.groupby(["sex", "age_band", "cd_subtype"]).size()
    assert classes.min() >= 5
    assert (patients[["sex", "age_band", "cd_subtype"]] == "*").to_numpy().any()
    statistics = json.loads((exports["pooled"] / "statistics.json").read_text())
    k = statistics["deidentification"]["k_anonymity"]
    assert k["k"] == classes.min() and k["min_k"] == 5
    assert k["k_before_suppression"] == _k_from_site_file(rows)
    assert statistics["cohort"]["patients"] == 8  # suppression never drops a patient


def _k_from_site_file(rows: list[dict[str, str]]) -> int:
    """Smallest class over sex x 10-year age band x subtype, computed from the raw site rows."""
    subtypes = {"torticollis": "rotational-torticollis"}
    people = {}
    for r in rows:
        if r["visit_type"] == "session" and r["session_number"] == "1":
            born, first = date.fromisoformat(r["birth_date"]), date.fromisoformat(r["visit_date"])
            age = first.year - born.year - ((first.month, first.day) < (born.month, born.day))
            band = "90+" if age >= 90 else f"{age // 10 * 10}-{age // 10 * 10 + 9}"
            subtype = "+".join(sorted(subtypes.get(s, s) for s in r["cd_subtype"].split("+")))
            people[r["site_patient_id"]] = (r["sex"], band, subtype)
    counts: dict[tuple, int] = {}
    for qi in people.values():
        counts[qi] = counts.get(qi, 0) + 1
    return min(counts.values())


def test_dictionary_names_the_policy_and_its_file_hash(exports: dict[str, Path]) -> None:
    rows = list(csv.DictReader((exports["a"] / "dictionary.csv").open()))
    values = {r["column"]: r["value"] for r in rows if r["file"] == "export"}
    policy_file = folder("policies") / "safe-harbor.yaml"
    assert values["policy"] == "safe-harbor"
    assert values["policy_sha256"] == hashlib.sha256(policy_file.read_bytes()).hexdigest()
    described = {(r["file"], r["column"]) for r in rows}
    header = next(csv.reader((exports["a"] / "patients.csv").open()))
    assert {("patients.csv", c) for c in header} <= described
    assert all(r["description"] for r in rows)


def test_without_a_key_nothing_is_read_and_the_error_says_what_to_set(cohort, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    store, _, _ = cohort
    with pytest.raises(DeidentificationUnavailable, match="FHIRFUS_DEID_KEY") as error:
        run_analysis(store, None, tmp_path / "none", "csv", key=None)
    assert error.value.status == 503
    assert not (tmp_path / "none").exists()


# --- policy rules -----------------------------------------------------------------------------


def _columns(**extra: ViewColumn) -> list[ViewColumn]:
    return [c for v in analysis_views() for c in v.columns] + list(extra.values())


def test_a_view_column_without_a_rule_refuses_the_export() -> None:
    extra = ViewColumn("analysis_patient", "marital", "code", ("maritalStatus.coding.code",), None)
    with pytest.raises(PolicyError, match=r"analysis_patient\.marital has no rule"):
        check_policy(load_policy("safe-harbor"), _columns(extra=extra))


def test_a_column_reading_names_or_free_text_is_refused_whatever_its_rule() -> None:
    policy = load_policy("safe-harbor")
    extra = ViewColumn("analysis_patient", "site", "string", ("name.family.first()",), None)
    columns = [c for c in _columns() if (c.view, c.name) != ("analysis_patient", "site")] + [extra]
    with pytest.raises(PolicyError, match="reads name, which never leaves"):
        check_policy(policy, columns)


def test_every_shipped_policy_covers_the_views() -> None:
    for name in ("safe-harbor", "safe-harbor-pooled"):
        check_policy(load_policy(name), _columns())


@pytest.mark.parametrize(("age", "band"), [(0, "0-4"), (47, "45-49"), (89, "85-89"), (90, "90+"), (104, "90+")])
def test_ages_over_89_are_reported_as_90_plus(age: int, band: str) -> None:
    assert age_band(age, 5, 90) == band


@pytest.mark.parametrize(("code", "expected"), [("80210", "802"), ("03601", "000"), ("89301-1234", "000"),
                                                ("8001", None), ("SW1A 1AA", None)])
def test_zip3_keeps_three_digits_and_never_a_restricted_prefix(code: str, expected: str | None) -> None:
    assert zip3(code, load_policy("safe-harbor").restricted_zip3) == expected
