"""fhirpy, a real FHIR client library, against fhirfus on both databases."""

from __future__ import annotations

import pytest
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound


@pytest.fixture
def fhir(server) -> SyncFHIRClient:
    return SyncFHIRClient(server.base)


def test_fhirpy_create_read_update_delete(fhir: SyncFHIRClient, unique: str) -> None:
    patient = fhir.resource("Patient", name=[{"family": f"Fhirpy{unique}"}], gender="female")
    patient.save()
    assert patient.id and patient["meta"]["versionId"] == "1"
    loaded = fhir.reference("Patient", patient.id).to_resource()
    assert loaded["name"][0]["family"] == f"Fhirpy{unique}"
    loaded["gender"] = "male"
    loaded.save()
    assert fhir.reference("Patient", patient.id).to_resource()["meta"]["versionId"] == "2"
    loaded.delete()
    with pytest.raises(ResourceNotFound):
        fhir.reference("Patient", patient.id).to_resource()


def test_fhirpy_search_and_count(fhir: SyncFHIRClient, unique: str) -> None:
    for n in range(3):
        fhir.resource("Patient", identifier=[{"system": f"urn:fhirpy:{unique}", "value": str(n)}]).save()
    search = fhir.resources("Patient").search(identifier=f"urn:fhirpy:{unique}|")
    assert search.count() == 3
    assert {p["identifier"][0]["value"] for p in search.fetch_all()} == {"0", "1", "2"}


def test_fhirpy_paging_follows_next_links(fhir: SyncFHIRClient, unique: str) -> None:
    for n in range(5):
        fhir.resource("Patient", identifier=[{"system": f"urn:fhirpy-page:{unique}", "value": str(n)}]).save()
    everything = fhir.resources("Patient").search(identifier=f"urn:fhirpy-page:{unique}|").limit(2).fetch_all()
    assert sorted(p["identifier"][0]["value"] for p in everything) == ["0", "1", "2", "3", "4"]


def test_fhirpy_conditional_create_returns_existing(fhir: SyncFHIRClient, unique: str) -> None:
    identifier = [{"system": f"urn:fhirpy-cc:{unique}", "value": "1"}]
    first = fhir.resource("Patient", identifier=identifier)
    first.create(identifier=f"urn:fhirpy-cc:{unique}|1")
    second = fhir.resource("Patient", identifier=identifier)
    second.create(identifier=f"urn:fhirpy-cc:{unique}|1")
    assert second.id == first.id
    assert fhir.resources("Patient").search(identifier=f"urn:fhirpy-cc:{unique}|1").count() == 1


def test_fhirpy_sees_validation_errors_as_operation_outcome(fhir: SyncFHIRClient) -> None:
    with pytest.raises(OperationOutcome) as raised:
        fhir.resource("Patient", gender="banana").save()
    assert "Patient.gender" in str(raised.value)
