"""``_summary`` and ``_elements``: which top-level elements a client asked to see.

Summary flags come from the R4B models (``summary_element_property`` of each field, taken from
the official definitions' ``isSummary``). A projected resource is tagged SUBSETTED, as the spec
requires, so nobody mistakes it for the whole record.
"""

from __future__ import annotations

from functools import cache

from fhir.resources.R4B import get_fhir_model_class

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
ALWAYS = frozenset({"resourceType", "id", "meta"})


@cache
def summary_elements(res_type: str) -> frozenset[str]:
    model = get_fhir_model_class(res_type)
    names = {
        field.alias or name
        for name, field in model.model_fields.items()
        if (field.json_schema_extra or {}).get("summary_element_property")  # type: ignore[union-attr]
    }
    return frozenset(names) | ALWAYS


@cache
def mandatory_elements(res_type: str) -> frozenset[str]:
    """Top-level elements with a minimum cardinality of 1.

    The models mark required primitives with ``element_required`` (they may be given as
    ``_status`` extensions alone) and required complex elements (``Observation.code``) as
    required pydantic fields; both are mandatory.
    """
    model = get_fhir_model_class(res_type)
    return frozenset(
        field.alias or name
        for name, field in model.model_fields.items()
        if field.is_required() or (field.json_schema_extra or {}).get("element_required")  # type: ignore[union-attr]
    )


def _subsetted(resource: dict, keep: frozenset[str] | set[str]) -> dict:
    projected = {k: v for k, v in resource.items() if k in keep}
    meta = dict(projected.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    projected["meta"] = meta
    return projected


def project(resource: dict, summary: str | None, elements: tuple[str, ...]) -> dict:
    """The resource as ``_summary`` / ``_elements`` ask (unchanged when neither is given)."""
    res_type = resource["resourceType"]
    if summary == "true":
        return _subsetted(resource, summary_elements(res_type))
    if summary == "text":
        return _subsetted(resource, ALWAYS | {"text"} | mandatory_elements(res_type))
    if summary == "data":
        return _subsetted(resource, set(resource) - {"text"})
    if elements:
        return _subsetted(resource, ALWAYS | set(elements) | mandatory_elements(res_type))
    return resource


def bulk_elements(resource: dict, elements: tuple[str, ...]) -> dict:
    """Bulk Data ``_elements`` (``name`` for every type, ``Type.name`` for one): the named and the
    mandatory elements, tagged SUBSETTED; a resource of a type no entry applies to stays whole."""
    res_type = resource.get("resourceType", "")
    named = {e.rpartition(".")[2] for e in elements if e.rpartition(".")[0] in ("", res_type)}
    if not named:
        return resource
    return _subsetted(resource, ALWAYS | named | mandatory_elements(res_type))
