"""The CapabilityStatement, generated from what the server really implements."""

from __future__ import annotations

from datetime import UTC, datetime

from fhirfus import FHIR_VERSION, __version__
from fhirfus.fhir.validation import served_types
from fhirfus.operations import search

#: Interactions implemented for every served resource type (see fhirfus.api.resources).
TYPE_INTERACTIONS = (
    "read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type",
)
SYSTEM_INTERACTIONS = ("history-system",)
_STARTED = datetime.now(UTC).isoformat(timespec="seconds")


def capability_statement(base: str) -> dict:
    search_params = [
        {"name": name, "definition": f"http://hl7.org/fhir/SearchParameter/Resource-{name.lstrip('_')}",
         "type": "token"}
        for name in search.SUPPORTED
    ]
    resources = [
        {
            "type": res_type,
            "interaction": [{"code": code} for code in TYPE_INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "not-supported",
            "conditionalUpdate": False,
            "conditionalDelete": "not-supported",
            "searchParam": search_params,
            "operation": [
                {"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}
            ],
        }
        for res_type in sorted(served_types())
    ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": _STARTED,
        "publisher": "fhirfus",
        "kind": "instance",
        "software": {"name": "fhirfus", "version": __version__},
        "implementation": {"description": "fhirfus FHIR R4 server", "url": base},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                "resource": resources,
                "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
            }
        ],
    }
