"""The server publishes what it enforces: the implementation guide's conformance resources
(Questionnaire, StructureDefinitions, CodeSystems, ValueSets, ConceptMaps, SearchParameters) and an
ImplementationGuide listing them are stored like any resource, so clients read and search them.

They are owned by ``PUBLISHED`` (``db.visibility``): every caller reads them, no client changes or
deletes them. ``publish`` runs at every start: a resource whose file changed gets a new version,
an unchanged one none; an id that data of a site already uses is left alone (logged).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson
from sqlalchemy import Connection

from fhirfus import FHIR_VERSION, __version__
from fhirfus.db.visibility import PUBLISHED, PUBLISHER, with_site_label
from fhirfus.ig import folder
from fhirfus.store import repository
from fhirfus.store.repository import Store

log = logging.getLogger("fhirfus.publication")

#: The guide's folders that hold FHIR conformance resources.
FOLDERS = ("questionnaires", "profiles", "terminology", "searchparameters")
GUIDE_ID = "fhirfus"
GUIDE_URL = "https://fhirfus.org/fhir/ImplementationGuide/fhirfus"


@dataclass
class Published:
    """What one ``publish`` did, as ``Type/id`` lists."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def guide_resources() -> list[dict]:
    """The conformance resources of the guide, then the ImplementationGuide that lists them."""
    found = [orjson.loads(path.read_bytes()) for name in FOLDERS for path in sorted(folder(name).glob("*.json"))]
    return [*found, implementation_guide(found)]


def implementation_guide(resources: Iterable[dict]) -> dict:
    listed = [{"reference": {"reference": f"{r['resourceType']}/{r['id']}"}, "name": r.get("title") or r.get("name"),
               "exampleBoolean": False} for r in resources]
    return {
        "resourceType": "ImplementationGuide", "id": GUIDE_ID, "url": GUIDE_URL, "version": __version__,
        "name": "Fhirfus", "title": "fhirfus: MRgFUS for cervical dystonia (TWSTRS, targets, outcomes)",
        "status": "active", "publisher": "fhirfus", "packageId": "org.fhirfus.ig", "license": "CC0-1.0",
        "fhirVersion": [FHIR_VERSION],
        "definition": {"resource": listed},
    }


def publish(store: Store, resources: list[dict] | None = None) -> Published:
    """Store the guide's resources (``resources``: the guide's own by default) as published, in one
    transaction; several servers starting at once publish one after the other."""
    report = Published()
    with store.writing() as conn:
        if conn.dialect.name == "postgresql":  # the server's own work: not bound by the requests' time limit
            conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
        repository.serialize_on(conn, "fhirfus:publish")
        for resource in resources if resources is not None else guide_resources():
            _publish_one(conn, with_site_label(resource, PUBLISHED), report)
    if report.created or report.updated:
        log.info("published %d new and %d changed guide resources", len(report.created), len(report.updated))
    return report


def _publish_one(conn: Connection, resource: dict, report: Published) -> None:
    res_type, res_id = resource["resourceType"], resource["id"]
    key = f"{res_type}/{res_id}"
    previous = repository.current(conn, PUBLISHER, res_type, res_id, for_update=True)
    if previous is None:
        repository.create(conn, res_type, res_id, resource, "PUT")
        report.created.append(key)
    elif previous.site != PUBLISHED:
        log.warning("%s is not published: data of %s uses that id", key, previous.site or "no site")
        report.skipped.append(key)
    elif not previous.deleted and _without_meta(previous.content) == _without_meta(resource):
        report.unchanged.append(key)
    else:
        repository.replace(conn, previous, resource, "PUT")
        report.updated.append(key)


def _without_meta(content: dict | None) -> dict:
    return {k: v for k, v in (content or {}).items() if k != "meta"}
