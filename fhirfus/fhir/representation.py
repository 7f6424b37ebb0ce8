"""The R4 JSON representation rules (https://hl7.org/fhir/R4/json.html) and primitive formats.

Why: the ``fhir.resources`` models read JSON leniently (``"active": "true"`` and ``"value": "1.5"``
pass, as do ``[]``, ``null`` and a ``_given`` that does not line up with ``given``), and they do not
check ``uri`` (a ``urn:oid:`` or ``urn:uuid:`` one included), ``oid``, ``uuid`` or strict base64.
What they let through, this module reports, each issue naming the element:

- no empty arrays or strings (an empty object is the invariant ele-1's to report);
  ``resourceType`` on resources only, and on every one; ``null`` only to keep a primitive array
  and its ``_x`` partner aligned (same length, never null at the same index in both);
- primitives of the right JSON type and within their ranges and formats (R4 datatypes page),
  strings without control characters other than tab, CR and LF;
- base64 of the base64 alphabet with correct padding (whitespace, which R4's own examples
  contain, is a warning); an ``Attachment.size`` equal to the length of the decoded ``data`` and
  an ``Attachment.hash`` equal to its SHA-1, when both are given.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fhirfus.errors import Issue
from fhirfus.fhir.bindings import element_tables, resource_types
from fhirfus.fhir.walk import Node

INT32 = (-(2**31), 2**31 - 1)
STRING_MAX = 1024 * 1024

_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_MONTH = r"(0[1-9]|1[0-2])"
_DAY = r"(0[1-9]|[1-2][0-9]|3[0-1])"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
_ZONE = r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"

#: The R4 regular expressions of the string-valued primitives (base64Binary without the whitespace
#: R4's allows: whitespace is reported apart, as a warning).
PATTERNS: Mapping[str, re.Pattern[str]] = {
    name: re.compile(f"(?:{pattern})\\Z")
    for name, pattern in {
        "id": r"[A-Za-z0-9\-\.]{1,64}",
        "code": r"[^\s]+(\s[^\s]+)*",
        "uri": r"\S*",
        "url": r"\S*",
        "canonical": r"\S*",
        "oid": r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+",
        "uuid": r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "base64Binary": r"([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?",
        "date": f"{_YEAR}(-{_MONTH}(-{_DAY})?)?",
        "dateTime": f"{_YEAR}(-{_MONTH}(-{_DAY}(T{_TIME}{_ZONE})?)?)?",
        "instant": f"{_YEAR}-{_MONTH}-{_DAY}T{_TIME}{_ZONE}",
        "time": _TIME,
    }.items()
}
_WHITESPACE = re.compile(r"\s+")
#: R4 strings are ``[ \r\n\t\S]+``: no other control character (a NUL breaks PostgreSQL's text too),
#: and nothing XML 1.0 cannot carry (U+FFFE, U+FFFF, lone surrogates), so every stored resource is
#: writable as FHIR XML.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_URI_UUID = re.compile(r"urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
URI_TYPES = frozenset({"uri", "url", "canonical"})
STRING_TYPES = frozenset({"string", "markdown", "xhtml", *PATTERNS})
INTEGER_MINIMUM = {"integer": INT32[0], "unsignedInt": 0, "positiveInt": 1}


def _issue(message: str, expr: str, code: str = "value") -> Issue:
    return Issue(message, code, "error", (expr,))


# --------------------------------------------------------------------------- JSON shape


def shape_issues(resource: Mapping[str, Any], root: str) -> list[Issue]:
    """Empty values, misplaced ``null`` and unaligned ``x`` / ``_x`` arrays, anywhere in the JSON."""
    out: list[Issue] = []
    if not _clean(resource):  # the common case answered without building a path for every value
        _object(resource, root, out)
    return out


def _clean(obj: Mapping[str, Any]) -> bool:
    """Whether ``_object`` would find nothing in ``obj``: the same rules, no messages or paths."""
    for key, value in obj.items():
        if value is None or value == "":
            return False
        if isinstance(value, dict):
            if not _clean(value):
                return False
        elif isinstance(value, list):
            if not value:
                return False
            partner = obj.get(key[1:] if key.startswith("_") else f"_{key}")
            if isinstance(partner, list) and len(partner) != len(value):
                return False  # unaligned (reported from the side without the underscore)
            for item in value:
                if item is None or item == "" or (isinstance(item, dict) and not _clean(item)):
                    return False
    return True


def _object(obj: Mapping[str, Any], expr: str, out: list[Issue]) -> None:
    for key, value in obj.items():
        where = f"{expr}.{key}"
        if value is None:
            out.append(_issue(f"'{key}' is null: absent elements are left out in FHIR JSON", where, "structure"))
        elif isinstance(value, list):
            _array(obj, key, value, where, out)
        else:
            _value(value, where, out)


def _array(obj: Mapping[str, Any], key: str, items: list[Any], expr: str, out: list[Issue]) -> None:
    if not items:
        out.append(_issue(f"'{key}' is an empty array: an element without values is left out", expr, "structure"))
        return
    partner_key = key[1:] if key.startswith("_") else f"_{key}"
    partner = obj.get(partner_key)
    if isinstance(partner, list) and len(partner) != len(items) and not key.startswith("_"):
        out.append(_issue(f"'{key}' has {len(items)} values but '{partner_key}' has {len(partner)}: they must align",
                          f"{expr.rsplit('.', 1)[0]}.{partner_key}", "structure"))
    for index, item in enumerate(items):
        where = f"{expr}[{index}]"
        if item is None:
            other = partner[index] if isinstance(partner, list) and index < len(partner) else None
            if other is None:
                out.append(_issue(f"null in '{key}' is only allowed where '{partner_key}' has a value at the same index",
                                  where, "structure"))
        else:
            _value(item, where, out)


def _value(value: Any, expr: str, out: list[Issue]) -> None:
    if isinstance(value, dict):
        _object(value, expr, out)  # an empty one is ele-1's to report (``fhirfus.fhirpath.invariants``)
    elif isinstance(value, str) and value == "":
        out.append(_issue("Empty string: an element without a value is left out", expr, "structure"))


# --------------------------------------------------------------------------- primitives


def _table_of(node: Node) -> Mapping[str, Any]:
    tables = element_tables()
    return tables.get(node.definition) or tables.get(node.type) or {}


def _article(word: str) -> str:
    return "An" if word[0] in "aeiouAEIOU" else "A"


def primitive_problem(kind: str, value: Any) -> tuple[str, str] | None:
    """(message, severity) when ``value`` is not a valid ``kind`` primitive in JSON, else None."""
    if kind == "boolean":
        return None if isinstance(value, bool) else (f"A boolean must be JSON true or false, not {value!r}", "error")
    if kind in INTEGER_MINIMUM:
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{_article(kind)} {kind} must be a JSON integer, not {value!r}", "error"
        if not INTEGER_MINIMUM[kind] <= value <= INT32[1]:
            return f"{value} is outside the range of {kind} ({INTEGER_MINIMUM[kind]}..{INT32[1]})", "error"
        return None
    if kind == "decimal":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else (f"A decimal must be a JSON number, not {value!r}", "error")
    if kind not in STRING_TYPES:
        return None
    if not isinstance(value, str):
        return f"{_article(kind)} {kind} must be a JSON string, not {value!r}", "error"
    if len(value) > STRING_MAX:
        return f"{_article(kind)} {kind} may not exceed 1 MB", "error"
    control = _CONTROL.search(value)
    if control is not None:
        return f"{_article(kind)} {kind} cannot contain the control character U+{ord(control.group()):04X}", "error"
    pattern = PATTERNS.get(kind)
    if kind == "base64Binary" and _WHITESPACE.search(value) and PATTERNS[kind].match(_WHITESPACE.sub("", value)):
        return "base64 should not contain whitespace (RFC 4648)", "warning"
    if kind in URI_TYPES and value.startswith(("urn:oid:", "urn:uuid:")):
        # as the reference validator does; the case of a uuid in a uri is not checked (R4's examples use both)
        pattern = PATTERNS["oid"] if value.startswith("urn:oid:") else _URI_UUID
    if pattern is not None and value and not pattern.match(value):
        shown = value if len(value) <= 80 else value[:77] + "..."
        return f"{shown!r} is not a valid {kind}", "error"
    return None


#: Verdicts of ``keep_primitive`` on short strings: codes, systems, units and dates repeat across
#: resources, and a dictionary look-up costs less than the format's regular expression. Keyed by
#: (type, string) only: ``True`` and ``1`` are equal keys, so no other JSON type may enter.
_KEPT_MAX = 8192
_KEY_LENGTH_MAX = 200
_kept: dict[tuple[str, str], bool] = {}


def keep_primitive(kind: str, value: Any) -> bool:
    """Which primitives a walk must hand on: narrative, and those with a problem (most have none,
    and not making a node for them is most of the walk's cost)."""
    if value.__class__ is not str or len(value) > _KEY_LENGTH_MAX:
        if kind == "string" and value.__class__ is str and len(value) <= STRING_MAX and not _CONTROL.search(value):
            return False  # the common case, decided without the general checks
        return kind == "xhtml" or primitive_problem(kind, value) is not None
    key = (kind, value)
    verdict = _kept.get(key)
    if verdict is None:
        verdict = kind == "xhtml" or primitive_problem(kind, value) is not None
        if len(_kept) >= _KEPT_MAX:
            _kept.clear()
        _kept[key] = verdict
    return verdict


def _decoded(data: Any) -> bytes | None:
    if not isinstance(data, str):
        return None
    data = _WHITESPACE.sub("", data)
    if not PATTERNS["base64Binary"].match(data):
        return None
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


def _attachment(node: Node, out: list[Issue]) -> None:
    attachment = node.value
    data = _decoded(attachment.get("data"))
    if data is None:
        return
    size = attachment.get("size")
    if isinstance(size, int) and not isinstance(size, bool) and size != len(data):
        out.append(_issue(f"size is {size} but data holds {len(data)} bytes", f"{node.expr}.size"))
    claimed = attachment.get("hash")
    if isinstance(claimed, str):
        digest = _decoded(claimed)
        if digest is not None and digest != hashlib.sha1(data).digest():
            out.append(_issue("hash is not the base64 SHA-1 of data", f"{node.expr}.hash"))


# --------------------------------------------------------------------------- entry point


def node_issues(nodes: Iterable[Node]) -> list[Issue]:
    """Primitive formats and attachment consistency of the walked nodes."""
    out: list[Issue] = []
    append: Callable[[Issue], None] = out.append
    for node in nodes:
        if node.primitive:
            continue
        value = node.value
        if isinstance(value, dict):
            if node.type == "Attachment":
                _attachment(node, out)
            elif node.type == "Resource" and not isinstance(value.get("resourceType"), str):
                append(Issue("A resource here needs its resourceType", "required", "error", (f"{node.expr}.resourceType",)))
            elif "resourceType" in value and node.type not in resource_types() and node.type != "Resource" \
                    and "resourceType" not in _table_of(node):  # ExampleScenario.instance has one
                append(Issue(f"Unknown element 'resourceType' in a {node.type}: only resources have one", "structure",
                             "error", (f"{node.expr}.resourceType",)))
        elif value is not None:
            problem = primitive_problem(node.type, value)
            if problem is not None:
                append(Issue(problem[0], "value", problem[1], (node.expr,)))
    return out
