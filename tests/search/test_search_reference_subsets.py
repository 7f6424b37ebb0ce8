"""Reference parameters that are another's references of one type (Observation ``patient`` is
``subject.where(resolve() is Patient)``) read that one's rows of the type: every way of reading
``patient`` (search, ``:missing``, chains, ``_has``, includes, compartments) answers as the spec
defines it, with a Group that shares the Patient's id as the case that must not leak in."""

from __future__ import annotations

import httpx
from rest_helpers import create
from rest_helpers import entry_ids as ids
from sqlalchemy import select

from fhirfus.db.tables import resources, search_reference


def put(client: httpx.Client, resource: dict) -> str:
    response = client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code in (200, 201), response.text
    return resource["id"]


def about(client: httpx.Client, system: str, label: str, subject: str | None) -> str:
    """An Observation coded ``system|label`` about ``subject`` (a ``Type/id``, or nobody)."""
    return create(client, {
        "resourceType": "Observation", "status": "final", "code": {"coding": [{"system": system, "code": label}]},
        **({"subject": {"reference": subject}} if subject else {}),
    })


def cohort(client: httpx.Client, unique: str) -> tuple[str, str, str, str, str]:
    """A Patient and a Group with the same id; an Observation about each, and one about nobody."""
    shared_id = f"s{unique}"
    put(client, {"resourceType": "Patient", "id": shared_id, "name": [{"family": f"Fam{unique}"}]})
    put(client, {"resourceType": "Group", "id": shared_id, "type": "person", "actual": True})
    system = f"urn:subset:{unique}"
    return (shared_id, system, about(client, system, "p", f"Patient/{shared_id}"),
            about(client, system, "g", f"Group/{shared_id}"), about(client, system, "n", None))


def test_patient_matches_the_subjects_that_are_patients_only(client: httpx.Client, unique: str) -> None:
    shared_id, _system, of_patient, of_group, _ = cohort(client, unique)
    assert ids(client, "/Observation", patient=shared_id) == [of_patient]
    assert set(ids(client, "/Observation", subject=shared_id)) == {of_patient, of_group}


def test_patient_missing_counts_a_group_subject_as_missing(client: httpx.Client, unique: str) -> None:
    _, system, of_patient, of_group, of_nobody = cohort(client, unique)
    assert set(ids(client, "/Observation", code=f"{system}|", **{"patient:missing": "true"})) == {of_group, of_nobody}
    assert ids(client, "/Observation", code=f"{system}|", **{"patient:missing": "false"}) == [of_patient]


def test_include_by_patient_adds_the_patient_and_not_the_group(client: httpx.Client, unique: str) -> None:
    shared_id, system, *_ = cohort(client, unique)
    response = client.get("/Observation", params={"code": f"{system}|", "_include": "Observation:patient"})
    assert response.status_code == 200
    included = [(e["resource"]["resourceType"], e["resource"]["id"])
                for e in response.json()["entry"] if e["search"]["mode"] == "include"]
    assert included == [("Patient", shared_id)]


def test_revinclude_by_patient_from_a_group_adds_nothing(client: httpx.Client, unique: str) -> None:
    shared_id, _, of_patient, _, _ = cohort(client, unique)
    from_group = ids(client, "/Group", _id=shared_id, _revinclude="Observation:patient")
    assert from_group == [shared_id]
    from_patient = ids(client, "/Patient", _id=shared_id, _revinclude="Observation:patient")
    assert from_patient == [shared_id, of_patient]


def test_chain_through_patient_follows_patient_subjects(client: httpx.Client, unique: str) -> None:
    _, _, of_patient, _, _ = cohort(client, unique)
    assert ids(client, "/Observation", **{"patient.family": f"Fam{unique}"}) == [of_patient]


def test_has_through_patient_finds_the_patient_and_not_the_group(client: httpx.Client, unique: str) -> None:
    shared_id, system, *_ = cohort(client, unique)
    criterion = {"_has:Observation:patient:code": f"{system}|g"}  # the Group's Observation
    assert ids(client, "/Patient", **criterion) == []
    assert ids(client, "/Patient", **{"_has:Observation:patient:code": f"{system}|p"}) == [shared_id]


def test_everything_reaches_a_condition_through_its_patient_parameter(client: httpx.Client, unique: str) -> None:
    """Condition is in the Patient compartment by ``patient`` (not ``subject``) in the official definition."""
    shared_id, _, of_patient, of_group, _ = cohort(client, unique)
    condition = create(client, {"resourceType": "Condition", "subject": {"reference": f"Patient/{shared_id}"}})
    on_group = create(client, {"resourceType": "Condition", "subject": {"reference": f"Group/{shared_id}"}})
    response = client.get(f"/Patient/{shared_id}/$everything")
    assert response.status_code == 200
    found = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in response.json()["entry"]}
    assert ("Condition", condition) in found and ("Observation", of_patient) in found
    assert ("Condition", on_group) not in found and ("Observation", of_group) not in found


def test_patient_rows_are_not_stored_beside_the_subject_rows(client: httpx.Client, server, unique: str) -> None:
    _, _, of_patient, _, _ = cohort(client, unique)
    with server.database.engine.connect() as conn:
        params = conn.execute(
            select(search_reference.c.param)
            .join_from(search_reference, resources, resources.c.pk == search_reference.c.resource_pk)
            .where(resources.c.res_id == of_patient, resources.c.res_type == "Observation")
        ).scalars().all()
    assert params == ["subject"]


def test_a_custom_parameter_replacing_a_holder_asks_for_a_reindex(tmp_path, caplog) -> None:
    """Replacing ``subject`` moves the rows ``patient`` reads: the deployment must reindex the type."""
    import json
    import logging

    from fhirfus.domain.conformance import load_search_parameters
    from fhirfus.search.registry import remove_custom_param, shares_rows

    assert shares_rows("Observation", "subject") and shares_rows("Observation", "patient")
    assert not shares_rows("Observation", "status")
    (tmp_path / "subject.json").write_text(json.dumps({
        "resourceType": "SearchParameter", "url": "https://example.org/sp/subject", "name": "subject",
        "status": "active", "description": "d", "code": "subject", "base": ["Observation"], "type": "reference",
        "expression": "Observation.subject | Observation.focus",
    }))
    try:
        with caplog.at_level(logging.WARNING, logger="fhirfus.conformance"):
            load_search_parameters(tmp_path)
    finally:
        remove_custom_param("Observation", "subject")
    assert "fhirfus reindex --type Observation" in caplog.text
