"""The CapabilityStatement, generated from what the server really implements."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache

from fhirfus import FHIR_VERSION, __version__
from fhirfus.fhir.validation import served_types
from fhirfus.search.query import UNSUPPORTED
from fhirfus.search.registry import params_for

#: Interactions implemented for every served resource type (see fhirfus.api.resources).
TYPE_INTERACTIONS = (
    "read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type",
)
SYSTEM_INTERACTIONS = ("history-system", "search-system")
#: Bulk Data Access v2 (``fhirfus.api.bulk``): system, Patient and Group level ``$export``.
BULK_DATA = "http://hl7.org/fhir/uv/bulkdata"
EXPORT_OPERATIONS = {
    None: {"name": "export", "definition": f"{BULK_DATA}/OperationDefinition/export"},
    "Patient": {"name": "export", "definition": f"{BULK_DATA}/OperationDefinition/patient-export"},
    "Group": {"name": "export", "definition": f"{BULK_DATA}/OperationDefinition/group-export"},
}
SEARCHABLE_TYPES = frozenset({"string", "token", "date", "reference", "number", "quantity", "uri", "composite"})
_STARTED = datetime.now(UTC).isoformat(timespec="seconds")


def _search_params(res_type: str) -> list[dict]:
    return [
        {"name": code, "type": param.type}
        for code, param in sorted(params_for(res_type).items())
        if code not in UNSUPPORTED and (param.type in SEARCHABLE_TYPES or code == "_id")
    ]


def _resource(res_type: str) -> dict:
    return {
        "type": res_type,
        "interaction": [{"code": code} for code in TYPE_INTERACTIONS],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "not-supported",
        "conditionalUpdate": False,
        "conditionalDelete": "not-supported",
        "searchInclude": ["*"],
        "searchRevInclude": ["*"],
        "searchParam": _search_params(res_type),
        "operation": [{"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}]
        + ([{"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}]
           if res_type == "Patient" else [])
        + ([{"name": "extract", "definition": "http://hl7.org/fhir/uv/sdc/OperationDefinition/QuestionnaireResponse-extract"}]
           if res_type == "QuestionnaireResponse" else [])
        + ([EXPORT_OPERATIONS[res_type]] if res_type in EXPORT_OPERATIONS else [])
        + ([ANALYSIS_EXPORT] if res_type == "Group" else []),
    }


#: De-identified analysis dataset of a cohort (fhirfus operation; analysts and admins).
ANALYSIS_EXPORT = {"name": "analysis-export", "definition": "https://fhirfus.org/fhir/OperationDefinition/analysis-export"}


@cache
def _resources() -> tuple[dict, ...]:
    return tuple(_resource(t) for t in sorted(served_types()))


def capability_statement(base: str) -> dict:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": _STARTED,
        "publisher": "fhirfus",
        "kind": "instance",
        "instantiates": [f"{BULK_DATA}/CapabilityStatement/bulk-data"],
        "software": {"name": "fhirfus", "version": __version__},
        "implementation": {"description": "fhirfus FHIR R4 server", "url": base},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                "resource": list(_resources()),
                "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
                "searchParam": [
                    {"name": "_id", "type": "token"}, {"name": "_lastUpdated", "type": "date"},
                    {"name": "_tag", "type": "token"}, {"name": "_profile", "type": "uri"},
                    {"name": "_security", "type": "token"},
                ],
                "operation": [EXPORT_OPERATIONS[None], ANALYSIS_EXPORT],
                "security": {
                    "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                             "code": "SMART-on-FHIR"}]}],
                    "description": "SMART Backend Services (client-credentials with a signed JWT assertion); "
                                   "see /fhir/.well-known/smart-configuration. Off only in development mode.",
                },
            }
        ],
    }
