"""Where a pulled site's resources live at the hub: ``{site}-{id}``, references to the source
rewritten alike, everything else untouched, the hub's site label."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from fhirfus.db.visibility import SITE_SYSTEM
from fhirfus.errors import InvalidRequest
from fhirfus.pull import definitions
from fhirfus.pull.namespace import MAX_ID, hub_id, hub_reference, to_hub
from fhirfus.store.repository import Store
from tests.conftest import Database

SOURCE = "https://site-a.example/fhir"


@pytest.mark.parametrize(("reference", "expected"), [
    ("Patient/1", "Patient/A-1"),
    ("Patient/1/_history/3", "Patient/A-1"),
    (f"{SOURCE}/Patient/1", "Patient/A-1"),
    (f"{SOURCE}/Patient/1/_history/2", "Patient/A-1"),
    ("https://elsewhere.example/fhir/Patient/1", None),
    ("urn:uuid:8d3c6b0e-4ab7-4b59-8d0c-4f7b0b0b0b0b", None),
    ("#contained-1", None),
    ("NotAType/1", None),
    ("Patient", None),
])
def test_references_to_the_source_follow_its_ids(reference: str, expected: str | None) -> None:
    assert hub_reference("A", SOURCE, reference) == expected


def test_an_id_too_long_for_the_prefix_becomes_a_stable_hash() -> None:
    long_id = "x" * 64
    first, second = hub_id("site", long_id), hub_id("site", long_id)
    assert first == second and len(first) == MAX_ID and first.startswith("site-")
    assert hub_id("site", "y" * 64) != first


def test_the_hub_copy_has_the_hubs_label_and_no_source_version() -> None:
    resource = {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
                "meta": {"versionId": "7", "lastUpdated": "2026-01-01T00:00:00Z",
                         "security": [{"system": SITE_SYSTEM, "code": "what-the-site-calls-itself"},
                                      {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                                       "code": "R"}]},
                "subject": {"reference": "Patient/p1"},
                "hasMember": [{"reference": f"{SOURCE}/Observation/o2"}, {"reference": "urn:uuid:1"}]}
    stored = to_hub(resource, "A", SOURCE)
    assert stored["id"] == "A-o1"
    assert stored["subject"] == {"reference": "Patient/A-p1"}
    assert stored["hasMember"] == [{"reference": "Observation/A-o2"}, {"reference": "urn:uuid:1"}]
    assert "versionId" not in stored["meta"] and "lastUpdated" not in stored["meta"]
    assert stored["meta"]["security"] == [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"},
        {"system": SITE_SYSTEM, "code": "A"}]


@pytest.mark.parametrize(("site", "source", "element"), [
    ("*", "https://a.example/fhir", "site"),
    ("", "https://a.example/fhir", "site"),
    ("a b", "https://a.example/fhir", "site"),
    ("x" * 33, "https://a.example/fhir", "site"),
    ("A", "ftp://a.example/fhir", "from"),
])
def test_a_definition_with_an_unusable_site_or_source_is_refused(
    database: Database, tmp_path: Path, site: str, source: str, element: str,
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        definitions.save(Store(database.engine), definitions.Definition(
            "bad", source, "client", str(tmp_path / "key.pem"), site), datetime.now(UTC))
    assert refused.value.issues[0].expression == (element,)


HUB = "https://hub.example/fhir"


@pytest.mark.parametrize("reference", [
    f"{HUB}/Patient/B-1",                # another site's patient, by the hub's own URL
    f"{HUB}/Patient/A-1/_history/1",     # even the site's own: ids at the hub are the hub's to assign
    f"{HUB}/Observation/x",
])
def test_a_reference_under_the_hubs_own_base_is_refused(reference: str) -> None:
    """Search takes the hub's own absolute URLs for local references: pulled data naming one would
    link a site's record to a hub resource outside the site's namespace."""
    with pytest.raises(InvalidRequest) as refused:
        hub_reference("A", SOURCE, reference, HUB)
    assert refused.value.issues[0].expression == ("reference",)
    assert hub_reference("A", SOURCE, reference) is None  # without a configured hub base: not recognisable


@pytest.mark.parametrize("reference", ["https://hub.example/fhirx/Patient/1", "https://hub.example.org/fhir/Patient/1"])
def test_a_url_that_only_starts_like_the_hubs_is_anothers(reference: str) -> None:
    assert hub_reference("A", SOURCE, reference, HUB) is None


def test_a_pulled_file_pointing_into_the_hub_fails_naming_the_line_and_writes_nothing(
    database: Database, tmp_path: Path,
) -> None:
    from fhirfus.db.visibility import EVERYTHING
    from fhirfus.pull.load import Loaded, load_output

    store = Store(database.engine)
    site = f"S{uuid.uuid4().hex[:8]}"  # the test database is shared: a site of this test's own
    lines = [{"resourceType": "Patient", "id": "p1"},
             {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
              "subject": {"reference": f"{HUB}/Patient/B-1"}}]
    path = tmp_path / "output.ndjson"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(InvalidRequest) as refused:
        load_output(store, path, site, SOURCE, Loaded(), hub_base=HUB)
    assert "line 2" in refused.value.message and refused.value.issues[0].expression == ("line 2",)
    rows = EVERYTHING.resources()
    with store.reading() as conn:  # the chunk with the good line 1 is not committed either
        assert conn.execute(select(func.count()).select_from(rows).where(
            rows.c.res_id.in_([hub_id(site, "p1"), hub_id(site, "o1")]))).scalar_one() == 0
