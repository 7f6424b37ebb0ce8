"""The CapabilityStatement, generated from what the server really implements.

Per type, an interaction is declared only when some caller may perform it (``SERVER``, the
unrestricted caller, stands for the most any scope allows: the audit trail, for instance, is
read-only for everybody), and the search parameters are the registry's (the IG's custom ones
included; an entry is rebuilt when its type's parameters change). ``tests/api/test_capabilities.py`` exercises every
declared kind over HTTP, and maps every route of the app to a declaration.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from fhirfus import FHIR_VERSION, __version__
from fhirfus.auth.access import SERVER
from fhirfus.domain.conformance import custom_parameter_urls
from fhirfus.domain.profiles import profiles
from fhirfus.domain.publication import GUIDE_URL
from fhirfus.fhir.validation import served_types
from fhirfus.search.query import UNSUPPORTED
from fhirfus.search.registry import SearchParam, params_for

#: Type-level interaction → the permission it needs (``Access.require``), as the routes check it.
TYPE_INTERACTIONS = {
    "read": "r", "vread": "r", "update": "u", "patch": "u", "delete": "d", "history-instance": "r",
    "history-type": "s", "create": "c", "search-type": "s",
}
SYSTEM_INTERACTIONS = ("transaction", "batch", "search-system", "history-system")
#: Bulk Data Access v2 (``fhirfus.api.bulk``): system, Patient and Group level ``$export``.
BULK_DATA = "http://hl7.org/fhir/uv/bulkdata"
EXPORT_OPERATIONS = {
    None: {"name": "export", "definition": f"{BULK_DATA}/OperationDefinition/export"},
    "Patient": {"name": "export", "definition": f"{BULK_DATA}/OperationDefinition/patient-export"},
    "Group": {"name": "export", "definition": f"{BULK_DATA}/OperationDefinition/group-export"},
}
#: De-identified analysis dataset of a cohort (fhirfus operation; analysts and admins).
ANALYSIS_EXPORT = {"name": "analysis-export", "definition": "https://fhirfus.org/fhir/OperationDefinition/analysis-export"}
#: Bulk ``$import`` of NDJSON named by URL or uploaded (``fhirfus.api.bulk_import``; site clients and admins).
IMPORT = {"name": "import", "definition": "https://fhirfus.org/fhir/OperationDefinition/import"}
#: SQL on FHIR v2 (``fhirfus.api.views``; also as ``ViewDefinition/$run``, its earlier name).
VIEWDEFINITION_RUN = {"name": "viewdefinition-run",
                      "definition": "http://sql-on-fhir.org/OperationDefinition/$viewdefinition-run"}
#: Its asynchronous form, in the Bulk Data pattern (``fhirfus.bulk.views``; also ``ViewDefinition/$viewdefinition-export``).
VIEWDEFINITION_EXPORT = {"name": "viewdefinition-export",
                         "definition": "http://sql-on-fhir.org/OperationDefinition/$viewdefinition-export"}
VALIDATE = {"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}
#: Operations of one type beyond $validate and $export: (operation, the permission it needs).
_CORE = "http://hl7.org/fhir/OperationDefinition"
TYPE_OPERATIONS: dict[str, tuple[tuple[dict, str | None], ...]] = {
    "Patient": (({"name": "everything", "definition": f"{_CORE}/Patient-everything"}, "r"),),
    "QuestionnaireResponse": (({"name": "extract", "definition":
                                "http://hl7.org/fhir/uv/sdc/OperationDefinition/QuestionnaireResponse-extract"}, "r"),),
    "Group": ((ANALYSIS_EXPORT, None),),  # by role (analysts and admins), not by scope
    # the terminology operations (``fhirfus.api.terminology``)
    "ValueSet": (({"name": "expand", "definition": f"{_CORE}/ValueSet-expand"}, "r"),
                 ({"name": "validate-code", "definition": f"{_CORE}/ValueSet-validate-code"}, "r")),
    "CodeSystem": (({"name": "lookup", "definition": f"{_CORE}/CodeSystem-lookup"}, "r"),
                   ({"name": "validate-code", "definition": f"{_CORE}/CodeSystem-validate-code"}, "r"),
                   ({"name": "subsumes", "definition": f"{_CORE}/CodeSystem-subsumes"}, "r")),
    "ConceptMap": (({"name": "translate", "definition": f"{_CORE}/ConceptMap-translate"}, "r"),),
}
SEARCHABLE_TYPES = frozenset({"string", "token", "date", "reference", "number", "quantity", "uri", "composite"})
#: Search parameters of every type (``Resource``'s), declared once at system level.
COMMON_PARAMS = ({"name": "_id", "type": "token"}, {"name": "_lastUpdated", "type": "date"},
                 {"name": "_tag", "type": "token"}, {"name": "_profile", "type": "uri"},
                 {"name": "_security", "type": "token"})
BINARY_DOCUMENTATION = (
    "Native content (binary.html#rest): POST/PUT with any non-FHIR Content-Type stores the body "
    "(X-Security-Context → securityContext); a read answers the bytes unless Accept or _format asks for "
    "FHIR. Reading a Binary needs the read of its securityContext.")
#: Types whose R4 form validation refuses (the R4B model requires ``Evidence.variableDefinition`` and
#: knows no ``exposureBackground``): stored ones are read and searched, none can be written.
R4_FORM_REFUSED = {"Evidence": "Read-only: an R4 Evidence cannot be validated (fhirfus checks structure "
                               "with the R4B model, whose Evidence differs), so it cannot be written."}
SUBSCRIPTION_DOCUMENTATION = (
    "R4 Subscriptions that fire, channel rest-hook only (others are refused with 422): criteria are a search "
    "of this server, matched on every committed write as the Subscription's site sees the data; notifications "
    "come from a durable queue, at least once and in order per resource. No payload: POST [endpoint] "
    "without body; channel.payload application/fhir+json: PUT [endpoint]/[type]/[id] with the resource (the "
    "backport-payload-content extension id-only: only its id and versionId); channel.header sent as given; "
    "X-Fhirfus-Signature: sha256=<HMAC of the body> when the server has a signing key. The server sets "
    "status active on accepting, and error (with the reason) after repeated failed deliveries.")
DOCUMENTATION = {"Binary": BINARY_DOCUMENTATION, "Subscription": SUBSCRIPTION_DOCUMENTATION, **R4_FORM_REFUSED}
_STARTED = datetime.now(UTC).isoformat(timespec="seconds")
#: type → (the registry's parameters it was built from, the entry): rebuilt when they change.
_built: dict[str, tuple[Mapping[str, SearchParam], dict]] = {}


def searchable(code: str, param: SearchParam) -> bool:
    """Whether a search with this parameter is answered (as ``fhirfus.search.query`` parses them)."""
    return code not in UNSUPPORTED and param.type in SEARCHABLE_TYPES


def _search_params(res_type: str, params: Mapping[str, SearchParam]) -> list[dict]:
    """The type's parameters; the guide's own name their SearchParameter (``definition``)."""
    custom = custom_parameter_urls()
    return [{"name": code, "type": param.type,
             **({"definition": custom[(res_type, code)]} if (res_type, code) in custom else {})}
            for code, param in sorted(params.items()) if searchable(code, param)]


def allowed(res_type: str, permission: str) -> bool:
    """Whether any caller may do this on ``res_type`` (the unrestricted one can whatever anyone can)."""
    if res_type in R4_FORM_REFUSED and permission in "cu":
        return False
    return SERVER.allows(res_type, permission)


def _operations(res_type: str) -> list[dict]:
    operations = [VALIDATE] if allowed(res_type, "c") else []
    operations += [operation for operation, permission in TYPE_OPERATIONS.get(res_type, ())
                   if permission is None or allowed(res_type, permission)]
    if res_type in EXPORT_OPERATIONS:
        operations.append(EXPORT_OPERATIONS[res_type])
    return operations


def _resource(res_type: str, params: Mapping[str, SearchParam]) -> dict:
    interactions = [code for code, permission in TYPE_INTERACTIONS.items() if allowed(res_type, permission)]
    supported_profiles = sorted(p.url for p in profiles().values() if p.type == res_type)
    entry: dict = {
        "type": res_type,
        **({"supportedProfile": supported_profiles} if supported_profiles else {}),
        **({"documentation": DOCUMENTATION[res_type]} if res_type in DOCUMENTATION else {}),
        "interaction": [{"code": code} for code in interactions],
        "versioning": "versioned-update",
        "readHistory": "read" in interactions,
        "updateCreate": "update" in interactions,
        "conditionalCreate": "create" in interactions,
        "conditionalRead": "full-support" if "read" in interactions else "not-supported",
        "conditionalUpdate": "update" in interactions,
        "conditionalDelete": "single" if "delete" in interactions else "not-supported",
        "searchInclude": ["*"],
        "searchRevInclude": ["*"],
        "searchParam": _search_params(res_type, params),
    }
    operations = _operations(res_type)
    if operations:
        entry["operation"] = operations
    return entry


def _resources() -> list[dict]:
    entries = []
    for res_type in sorted(served_types()):
        params = params_for(res_type)
        built = _built.get(res_type)
        if built is None or built[0] is not params:
            built = _built[res_type] = (params, _resource(res_type, params))
        entries.append(built[1])
    return entries


def capability_statement(base: str, *, integrity: bool = True, cors: bool = False) -> dict:
    """The statement as this deployment behaves: ``integrity`` (``Settings.referential_integrity``)
    makes references ``enforced``; ``cors`` (``Settings.cors_origins``) is told under ``security``."""
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
        "implementationGuide": [GUIDE_URL],
        "format": ["application/fhir+json", "json", "application/fhir+xml", "xml"],
        "patchFormat": ["application/json-patch+json", "application/fhir+json", "application/fhir+xml"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "cors": cors,
                    "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                             "code": "SMART-on-FHIR"}]}],
                    "description": "SMART Backend Services (client-credentials with a signed JWT assertion); "
                                   "see /fhir/.well-known/smart-configuration. Off only in development mode.",
                },
                "resource": [
                    {**entry, "referencePolicy": ["literal", "logical", *(["enforced"] if integrity else [])]}
                    for entry in _resources()
                ],
                "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
                "searchParam": list(COMMON_PARAMS),
                "operation": [EXPORT_OPERATIONS[None], IMPORT, ANALYSIS_EXPORT, VIEWDEFINITION_RUN, VIEWDEFINITION_EXPORT,
                              VALIDATE],
            }
        ],
    }
