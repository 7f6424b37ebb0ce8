"""FHIR R4 XML (xml.html), to and from the JSON form every other part of fhirfus works on.

Driven by the element tables generated from the official definitions (``data/fhir_elements.json``:
each element's position, whether it repeats, its types), so it covers every resource and
datatype: elements are written in definition order, primitives as ``value`` attributes with
their ``id``/``extension`` (JSON's ``_name``), ``Extension.url`` and element ids as attributes,
nested resources wrapped in their type's element, the narrative ``div`` as XHTML in its own
namespace. Reading does the reverse and types the primitives (booleans, integers, decimals).

Parsing is hardened: no DTD, no entities, no network, bounded size and depth. Errors are
``InvalidResource``/``InvalidRequest`` naming the element.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from typing import Any, Final

from lxml import etree

from fhirfus.errors import InvalidRequest, InvalidResource
from fhirfus.fhir.elements import Element, element_model

FHIR_NS: Final = "http://hl7.org/fhir"
XHTML_NS: Final = "http://www.w3.org/1999/xhtml"
MAX_DEPTH: Final = 64
_NUMBERS: Final = frozenset({"integer", "positiveInt", "unsignedInt", "integer64"})
_DECIMAL_RE: Final = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_INTEGER_RE: Final = re.compile(r"[0]|[-+]?[1-9][0-9]{0,31}")  # R4 integers are 32-bit (integer64: 64)
_DECIMAL_DIGITS: Final = 64  # far beyond any decimal FHIR carries; int()/float() of megabytes of digits are refused


# --- JSON → XML -------------------------------------------------------------------------------


def to_xml(resource: Mapping[str, Any]) -> bytes:
    """One resource as FHIR XML (UTF-8, with the XML declaration)."""
    root = _resource_element(resource)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _resource_element(resource: Mapping[str, Any]) -> etree.Element:
    res_type = resource.get("resourceType")
    model = element_model()
    if not isinstance(res_type, str) or res_type not in model.tables:
        raise InvalidResource(f"Cannot write a {res_type!r} as XML", "resourceType")
    element = etree.Element(f"{{{FHIR_NS}}}{res_type}", nsmap={None: FHIR_NS})
    _write_object(element, resource, res_type, is_resource=True)
    return element


def _write_object(parent: etree.Element, obj: Mapping[str, Any], table_key: str, *, is_resource: bool) -> None:
    table = element_model().tables[table_key]
    if not is_resource:
        if isinstance(obj.get("id"), str):
            parent.set("id", obj["id"])
        if table_key == "Extension" and isinstance(obj.get("url"), str):
            parent.set("url", obj["url"])
    names = {key.lstrip("_") for key in obj if not (is_resource and key == "resourceType")}
    ordered = sorted(names, key=lambda n: (table[n].order, n) if n in table else (10_000, n))
    for name in ordered:
        element = table.get(name)
        if element is None:
            raise InvalidResource(f"Unknown element '{name}' of {table_key}", f"{table_key}.{name}")
        if not is_resource and (name == "id" or (table_key == "Extension" and name == "url")):
            continue  # written as attributes above
        values, shadows = obj.get(name), obj.get(f"_{name}")
        if element.many:
            values = values if isinstance(values, list) else []
            shadows = shadows if isinstance(shadows, list) else []
            count = max(len(values), len(shadows))
            pairs = [(values[i] if i < len(values) else None, shadows[i] if i < len(shadows) else None)
                     for i in range(count)]
        else:
            pairs = [(values, shadows)]
        for value, shadow in pairs:
            _write_value(parent, element, value, shadow)


def _write_value(parent: etree.Element, element: Element, value: Any, shadow: Any) -> None:
    if element.type == "xhtml":
        parent.append(_parse_xhtml(value))
        return
    child = etree.SubElement(parent, f"{{{FHIR_NS}}}{element.name}")
    if element.table == "Resource":
        if isinstance(value, Mapping):
            child.append(_resource_element(value))
        return
    if element.table is not None:
        if isinstance(value, Mapping):
            _write_object(child, value, element.table, is_resource=False)
        return
    if value is not None:
        try:
            child.set("value", _primitive_text(value))
        except ValueError as exc:  # a control character (refused on write since; stored before)
            raise InvalidResource(f"{element.name} holds characters XML cannot carry: {exc}", element.name) from exc
    if isinstance(shadow, Mapping):
        _write_object(child, shadow, "Element", is_resource=False)


_NOT_XML: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def xml_safe(value: Any) -> Any:
    """``value`` with every character XML cannot carry replaced by U+FFFD: for what the server says
    (an OperationOutcome echoing a client's input), which must always be writable."""
    if isinstance(value, str):
        return _NOT_XML.sub("\ufffd", value)
    if isinstance(value, Mapping):
        return {key: xml_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [xml_safe(item) for item in value]
    return value


def _primitive_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if value != int(value) or abs(value) >= 1e16 else f"{value:.1f}"
    return str(value)


def _parse_xhtml(value: Any) -> etree.Element:
    problem = _xhtml_problem(value)
    if problem is not None:
        raise InvalidResource(problem, "Narrative.div")
    return etree.fromstring(value.encode(), _parser())


def _xhtml_problem(value: Any) -> str | None:
    """Why ``value`` is not a narrative ``div`` (None when it is): XHTML text, well-formed, one
    ``div`` in the XHTML namespace, no DTD and no entity declarations (narrative.html). Writes are
    held to this by ``fhir.narrative``; here it guards the XML of anything stored before."""
    if not isinstance(value, str):
        return "Narrative.div must be XHTML text"
    encoded = value.encode()
    if _declares_dtd(encoded):
        return "Narrative.div may not carry a DOCTYPE or entity declarations"
    try:
        element = etree.fromstring(encoded, _parser())
    except (etree.XMLSyntaxError, ValueError) as exc:
        return f"Narrative.div is not well-formed XHTML: {exc}"
    if element.getroottree().docinfo.internalDTD is not None:
        return "Narrative.div may not carry a DOCTYPE or entity declarations"
    if element.tag != f"{{{XHTML_NS}}}div":
        return "Narrative.div must be an XHTML div (<div xmlns=\"http://www.w3.org/1999/xhtml\">)"
    return None


def _declares_dtd(body: bytes) -> bool:
    upper = body.upper()
    return b"<!DOCTYPE" in upper or b"<!ENTITY" in upper


_ENCODING_RE: Final = re.compile(rb"""^(?:\xef\xbb\xbf)?\s*<\?xml[^>]*?\bencoding\s*=\s*["']([^"']*)["']""")


def _require_utf8(body: bytes) -> None:
    """FHIR XML is UTF-8 (http.html): another encoding (UTF-16 above all) would hide a DOCTYPE or
    an entity declaration from the byte check below, and libxml2 would expand them."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"FHIR XML is UTF-8; the body is not ({exc.reason} at byte {exc.start})", "body") from exc
    declared = _ENCODING_RE.match(body)
    if declared and declared.group(1).decode("ascii", "replace").strip().lower() not in ("utf-8", "utf8"):
        raise InvalidRequest(f"FHIR XML is UTF-8, not {declared.group(1).decode('ascii', 'replace')!r}", "body")


# --- XML → JSON -------------------------------------------------------------------------------


@cache
def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           huge_tree=False, remove_comments=True, remove_pis=True)


def from_xml(body: bytes) -> dict:
    """The JSON form of a FHIR XML resource; 400 naming the element for anything else."""
    _require_utf8(body)
    if _declares_dtd(body):
        raise InvalidRequest("FHIR XML may not carry a DOCTYPE or entities", "body")
    try:
        root = etree.fromstring(body, _parser())
    except etree.XMLSyntaxError as exc:
        raise InvalidRequest(f"The body is not well-formed XML: {exc}", "body") from exc
    if root.getroottree().docinfo.internalDTD is not None:
        raise InvalidRequest("FHIR XML may not carry a DOCTYPE or entities", "body")
    return _read_resource(root, 0)


def _local(element: etree.Element, where: str) -> str:
    tag = element.tag
    if not isinstance(tag, str) or not tag.startswith(f"{{{FHIR_NS}}}"):
        raise InvalidResource(f"{where}: element {tag!r} is not in the FHIR namespace {FHIR_NS}", where)
    return tag[len(FHIR_NS) + 2:]


def _read_resource(element: etree.Element, depth: int) -> dict:
    res_type = _local(element, "resourceType")
    if res_type not in element_model().resources:
        raise InvalidResource(f"Unknown resource type '{res_type}'", "resourceType")
    found: dict[str, Any] = {"resourceType": res_type}
    found.update(_read_object(element, res_type, res_type, depth + 1, is_resource=True))
    return found


def _read_object(element: etree.Element, table_key: str, where: str, depth: int, *, is_resource: bool) -> dict:
    if depth > MAX_DEPTH:
        raise InvalidResource(f"{where}: nested deeper than {MAX_DEPTH} levels", where)
    table = element_model().tables[table_key]
    found: dict[str, Any] = {}
    for attribute, text in element.attrib.items():
        if not is_resource and attribute == "id":
            found["id"] = text
        elif table_key == "Extension" and attribute == "url":
            found["url"] = text
        elif attribute != "value" or table_key != "Element":
            raise InvalidResource(f"{where}: unexpected attribute '{attribute}'", where)
    positions: dict[str, int] = {}
    for child in element:
        if not isinstance(child.tag, str):
            continue
        if child.tag == f"{{{XHTML_NS}}}div" and "div" in table:
            found["div"] = etree.tostring(child, encoding="unicode", with_tail=False)
            continue
        name = _local(child, where)
        spec = table.get(name)
        if spec is None:
            raise InvalidResource(f"Unknown element '{name}' of {table_key}", f"{where}.{name}")
        index = positions.get(name, 0)
        positions[name] = index + 1
        if index and not spec.many:
            raise InvalidResource(f"{where}.{name} may occur once", f"{where}.{name}")
        path = f"{where}.{name}" + (f"[{index}]" if spec.many else "")
        value, shadow = _read_value(child, spec, path, depth)
        if spec.many:
            found.setdefault(name, []).append(value)
            if shadow is not None:
                shadows = found.setdefault(f"_{name}", [])
                shadows.extend([None] * (index - len(shadows)))
                shadows.append(shadow)
        else:
            if value is not None:
                found[name] = value
            if shadow is not None:
                found[f"_{name}"] = shadow
    for name, values in list(found.items()):
        if isinstance(values, list) and name.startswith("_"):
            base = found.get(name[1:], [])
            values.extend([None] * (len(base) - len(values)))
        elif isinstance(values, list) and all(v is None for v in values) and f"_{name}" in found:
            del found[name]
    return found


def _read_value(child: etree.Element, spec: Element, path: str, depth: int) -> tuple[Any, Any]:
    if spec.table == "Resource":
        inner = [c for c in child if isinstance(c.tag, str)]
        if len(inner) != 1:
            raise InvalidResource(f"{path} must hold exactly one resource", path)
        return _read_resource(inner[0], depth + 1), None
    if spec.table is not None:
        return _read_object(child, spec.table, path, depth + 1, is_resource=False), None
    text = child.get("value")
    shadow = _read_object(child, "Element", path, depth + 1, is_resource=False) if (
        len(child) or child.get("id") is not None) else None
    if text is None and shadow is None:
        raise InvalidResource(f"{path} has neither a value nor extensions", path)
    return (None if text is None else _typed(text, spec.type, path)), shadow


def _typed(text: str, type_code: str, path: str) -> Any:
    if type_code == "boolean":
        if text not in ("true", "false"):
            raise InvalidResource(f"{path}: '{text}' is not a boolean", path)
        return text == "true"
    if type_code in _NUMBERS:
        if not _INTEGER_RE.fullmatch(text):
            raise InvalidResource(f"{path}: '{text}' is not an integer", path)
        return int(text)
    if type_code == "decimal":
        if len(text) > _DECIMAL_DIGITS or not _DECIMAL_RE.fullmatch(text):
            raise InvalidResource(f"{path}: '{text}' is not a decimal", path)
        number = float(text)
        return int(number) if "." not in text and "e" not in text.lower() and abs(number) < 2**53 else number
    return text
