"""The terminology operations over ``fhirfus.terminology``: ``ValueSet/$expand``,
``ValueSet/$validate-code``, ``CodeSystem/$lookup``, ``CodeSystem/$validate-code``,
``CodeSystem/$subsumes``, ``ConceptMap/$translate`` (R4 terminology-service.html).

Inputs come from the query string or a ``Parameters`` body (``inputs``); each operation returns a
``Parameters`` resource (``$expand``: a ValueSet with its ``expansion``). The code systems, value
sets and maps are the guide's, the R4 ones of required bindings and those stored on the server
that the caller may read (it needs ``r`` on the operation's type).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fhirfus.auth.access import Access
from fhirfus.errors import InvalidRequest, NotFound
from fhirfus.fhir.numbers import whole_number
from fhirfus.fhir.validation import validate_resource
from fhirfus.interactions import crud
from fhirfus.operations.parameters import Inputs
from fhirfus.store import repository
from fhirfus.store.repository import Store, format_instant
from fhirfus.terminology import codesystems, conceptmaps, expansion
from fhirfus.terminology.expansion import UnknownValueSet, ValueSetError
from fhirfus.terminology.sources import Lookup

MAX_EXPANSION = 10_000  # concepts one $expand answer lists at most; beyond, use count/offset

_UNKNOWN = (UnknownValueSet, codesystems.UnknownCodeSystem, conceptmaps.UnknownConceptMap)


def _text(given: Inputs, name: str, required: bool = False) -> str | None:
    value = given.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"Parameter '{name}' is required", name)
        return None
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"Parameter '{name}' must be a non-empty string", name)
    return value


def _number(given: Inputs, name: str, default: int) -> int:
    value = given.get(name)
    return default if value is None else whole_number(value, name)


def _string(value: Any, element: str) -> str | None:
    """A string part of a coding input (None when absent); anything else is a 400 naming it."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{element} must be a non-empty string, not {value!r}"[:200], element)
    return value


def _coding(value: Any, name: str) -> Mapping[str, Any] | None:
    """A Coding input (``coding``, ``codingA``…): an object whose system, code and display are strings."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"Parameter '{name}' must be a Coding", name)
    for part in ("system", "code", "display", "version"):
        _string(value.get(part), f"{name}.{part}")
    return value


def _coded(given: Inputs) -> tuple[str | None, str | None, str | None]:
    """(system, code, display) from ``system``/``code``/``display``, a ``coding`` or the first coding
    of a ``codeableConcept``."""
    coding = _coding(given.get("coding"), "coding")
    concept = given.get("codeableConcept")
    if concept is not None:
        codings = concept.get("coding") if isinstance(concept, Mapping) else None
        if not isinstance(codings, list):
            raise InvalidRequest("Parameter 'codeableConcept' must be a CodeableConcept with codings",
                                 "codeableConcept")
        coding = _coding(codings[0], "codeableConcept.coding[0]") if codings else None
    if isinstance(coding, Mapping):
        return coding.get("system"), coding.get("code"), coding.get("display")
    return _text(given, "system"), _text(given, "code"), _text(given, "display")


def _reading(store: Store, caller: Access, kind: str) -> Any:
    caller.require(kind, "r")
    return store.reading()


def _stored(conn: Any, caller: Access, inline: Mapping[str, Any] | None = None) -> Lookup:
    stored = repository.terminology_lookup(conn, caller.visibility)
    if inline is None:
        return stored

    def lookup(kind: str, canonical: str) -> Mapping[str, Any] | None:
        if kind == inline.get("resourceType") and canonical in (inline.get("url"),
                                                                 f"{inline.get('url')}|{inline.get('version')}"):
            return inline
        return stored(kind, canonical)

    return lookup


def _instance_url(store: Store, caller: Access, kind: str, res_id: str | None) -> str | None:
    if res_id is None:
        return None
    url = (crud.read(store, caller, kind, res_id).content or {}).get("url")
    if not isinstance(url, str):
        raise InvalidRequest(f"{kind}/{res_id} has no canonical url", f"{kind}.url")
    return url


def _refused(exc: ValueSetError, name: str) -> Exception:
    if isinstance(exc, _UNKNOWN):
        return NotFound(str(exc), name)
    return InvalidRequest(str(exc), name)


# --- ValueSet ---------------------------------------------------------------------------------


def expand(store: Store, caller: Access, given: Inputs, now: datetime, res_id: str | None = None) -> dict:
    """ValueSet/$expand (``url``, ``valueSetVersion``, inline ``valueSet``, ``filter``, ``count``,
    ``offset``, ``displayLanguage``)."""
    inline = given.get("valueSet")
    if inline is not None and (not isinstance(inline, Mapping) or inline.get("resourceType") != "ValueSet"):
        raise InvalidRequest("Parameter 'valueSet' must be a ValueSet resource", "valueSet")
    if inline is not None:
        inline = validate_resource(dict(inline), "ValueSet")  # a stored ValueSet was; an inline one is too
    url = _instance_url(store, caller, "ValueSet", res_id) or _text(given, "url") or (
        inline.get("url") if inline else None)
    if not url:
        raise InvalidRequest("$expand needs a ValueSet: url, valueSet or an instance", "url")
    version = _text(given, "valueSetVersion")
    canonical = f"{url}|{version}" if version else url
    count, offset = _number(given, "count", MAX_EXPANSION), _number(given, "offset", 0)
    text, language = _text(given, "filter"), _text(given, "displayLanguage")
    with _reading(store, caller, "ValueSet") as conn:
        try:
            found = expansion.concepts(canonical, _stored(conn, caller, inline), language=language)
        except ValueSetError as exc:
            raise _refused(exc, "url") from exc
    if text:
        found = expansion.matching(found, text)
    if "count" not in given and len(found) - offset > MAX_EXPANSION:
        raise InvalidRequest(f"{url} has {len(found)} concepts; page through them with count and offset", "count")
    page = found[offset:offset + min(count, MAX_EXPANSION)]
    used: list[dict] = []
    if text:
        used.append({"name": "filter", "valueString": text})
    if language:
        used.append({"name": "displayLanguage", "valueCode": language})
    used.append({"name": "offset", "valueInteger": offset})
    if "count" in given:
        used.append({"name": "count", "valueInteger": count})
    return {
        "resourceType": "ValueSet", "url": url, "status": "active", **({"version": version} if version else {}),
        "expansion": {
            "identifier": f"urn:uuid:{uuid.uuid4()}", "timestamp": format_instant(now),
            "total": len(found), "offset": offset, "parameter": used,
            "contains": [{"system": c.system, "code": c.code, **({"display": c.display} if c.display else {})}
                         for c in page],
        },
    }


def validate_valueset_code(
    store: Store, caller: Access, given: Inputs, res_id: str | None = None,
) -> dict:
    """ValueSet/$validate-code: is ``system#code`` (or a coding, a codeableConcept) in the value set?"""
    url = _instance_url(store, caller, "ValueSet", res_id) or _text(given, "url", required=True)
    system, code, display = _coded(given)
    if not code:
        raise InvalidRequest("$validate-code needs a code (code, coding or codeableConcept)", "code")
    with _reading(store, caller, "ValueSet") as conn:
        try:
            found = expansion.concepts(str(url), _stored(conn, caller))
        except ValueSetError as exc:
            raise _refused(exc, "url") from exc
    hits = [c for c in found if c.code == code and (system is None or c.system == system)]
    if not hits:
        where = f"{system}#{code}" if system else f"'{code}'"
        return _parameters(("result", "valueBoolean", False), ("message", "valueString", f"{where} is not in {url}"))
    shown = hits[0].display
    if display is not None and shown is not None and display.strip().lower() != shown.lower():
        return _parameters(("result", "valueBoolean", False), ("display", "valueString", shown),
                           ("message", "valueString", f"'{display}' is not the display of {hits[0].system}#{code}, "
                                                      f"which is '{shown}'"))
    return _parameters(("result", "valueBoolean", True), ("display", "valueString", shown))


# --- CodeSystem -------------------------------------------------------------------------------


def lookup(store: Store, caller: Access, given: Inputs) -> dict:
    """CodeSystem/$lookup (``system`` + ``code`` or ``coding``, ``version``, ``displayLanguage``)."""
    system, code, _display = _coded(given)
    if not system or not code:
        raise InvalidRequest("$lookup needs a system and a code (or a coding)", "code" if system else "system")
    with _reading(store, caller, "CodeSystem") as conn:
        try:
            found = codesystems.lookup_code(system, code, _stored(conn, caller), _text(given, "version"),
                                            _text(given, "displayLanguage"))
        except codesystems.UnknownCode as exc:
            raise NotFound(str(exc), "code") from exc
        except ValueSetError as exc:
            raise _refused(exc, "system") from exc
    parts: list[tuple[str, str, Any]] = [("name", "valueString", found["name"])]
    for name in ("version", "display"):
        if found[name]:
            parts.append((name, "valueString", found[name]))
    parameters = _parameters(*parts)
    if found["definition"]:
        parameters["parameter"].append({"name": "definition", "valueString": found["definition"]})
    for designation in found["designation"]:
        parameters["parameter"].append({"name": "designation", "part": [
            {"name": "language", "valueCode": designation["language"]} if designation.get("language") else None,
            {"name": "use", "valueCoding": designation["use"]} if designation.get("use") else None,
            {"name": "value", "valueString": designation.get("value", "")}]})
        parameters["parameter"][-1]["part"] = [p for p in parameters["parameter"][-1]["part"] if p]
    for prop in found["property"]:
        value = {k: v for k, v in prop.items() if k.startswith("value")}
        parameters["parameter"].append({"name": "property", "part": [
            {"name": "code", "valueCode": prop["code"]}, *({"name": "value", k: v} for k, v in value.items())]})
    return parameters


def validate_codesystem_code(store: Store, caller: Access, given: Inputs, res_id: str | None = None) -> dict:
    """CodeSystem/$validate-code: is ``code`` a code of the system (and ``display`` its display)?"""
    system, code, display = _coded(given)
    system = _instance_url(store, caller, "CodeSystem", res_id) or _text(given, "url") or system
    if not system or not code:
        raise InvalidRequest("$validate-code needs the code system (url) and a code", "code" if system else "url")
    with _reading(store, caller, "CodeSystem") as conn:
        valid, message, shown = codesystems.validate_in_system(
            system, code, display, _stored(conn, caller), _text(given, "version"))
    parts: list[tuple[str, str, Any]] = [("result", "valueBoolean", valid), ("message", "valueString", message)]
    if shown:
        parts.append(("display", "valueString", shown))
    return _parameters(*parts)


def subsumes(store: Store, caller: Access, given: Inputs) -> dict:
    """CodeSystem/$subsumes (``system``, ``codeA``, ``codeB`` or ``codingA``/``codingB``)."""
    coding_a, coding_b = _coding(given.get("codingA"), "codingA"), _coding(given.get("codingB"), "codingB")
    system = _text(given, "system") or (coding_a.get("system") if isinstance(coding_a, Mapping) else None)
    code_a = coding_a.get("code") if isinstance(coding_a, Mapping) else _text(given, "codeA")
    code_b = coding_b.get("code") if isinstance(coding_b, Mapping) else _text(given, "codeB")
    if not system or not code_a or not code_b:
        raise InvalidRequest("$subsumes needs a system and two codes (codeA, codeB)", "system" if not system else "codeA")
    with _reading(store, caller, "CodeSystem") as conn:
        try:
            outcome = codesystems.subsumes(system, code_a, code_b, _stored(conn, caller), _text(given, "version"))
        except codesystems.UnknownCode as exc:
            raise InvalidRequest(str(exc), "codeA") from exc
        except ValueSetError as exc:
            raise _refused(exc, "system") from exc
    return _parameters(("outcome", "valueCode", outcome))


# --- ConceptMap -------------------------------------------------------------------------------


def translate(store: Store, caller: Access, given: Inputs, res_id: str | None = None) -> dict:
    """ConceptMap/$translate (``url`` or an instance, or ``source``/``target`` value sets;
    ``system``+``code``, ``coding`` or ``codeableConcept``; ``targetsystem``; ``reverse``)."""
    system, code, _display = _coded(given)
    if not system or not code:
        raise InvalidRequest("$translate needs a system and a code (or a coding)", "code" if system else "system")
    url = _instance_url(store, caller, "ConceptMap", res_id) or _text(given, "url")
    reverse = given.get("reverse", False)
    if not isinstance(reverse, bool):
        if str(reverse).lower() not in ("true", "false"):
            raise InvalidRequest(f"reverse must be true or false, not {reverse!r}"[:200], "reverse")
        reverse = str(reverse).lower() == "true"
    with _reading(store, caller, "ConceptMap") as conn:
        try:
            matches = conceptmaps.translate(
                system, code, _stored(conn, caller), url=url, source=_text(given, "source"),
                target=_text(given, "target"), target_system=_text(given, "targetsystem"), reverse=reverse)
        except ValueSetError as exc:
            raise _refused(exc, "url") from exc
    message = f"{len(matches)} match(es) for {system}#{code}" if matches else f"no match for {system}#{code}"
    parameters = _parameters(("result", "valueBoolean", bool(matches)), ("message", "valueString", message))
    for match in matches:
        concept = {"system": match.system, "code": match.code, **({"display": match.display} if match.display else {})}
        parameters["parameter"].append({"name": "match", "part": [
            {"name": "equivalence", "valueCode": match.equivalence},
            {"name": "concept", "valueCoding": concept},
            {"name": "source", "valueUri": match.source}]})
    return parameters


def _parameters(*parts: tuple[str, str, Any]) -> dict:
    return {"resourceType": "Parameters",
            "parameter": [{"name": name, kind: value} for name, kind, value in parts if value is not None]}
