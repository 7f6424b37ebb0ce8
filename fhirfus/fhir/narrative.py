"""Narrative XHTML limited to what R4 allows (https://hl7.org/fhir/R4/narrative.html, txt-1, txt-2).

Why: narrative is served back to browsers; a ``<script>``, an ``onclick`` or a ``javascript:`` link
stored in ``text.div`` would run in every viewer of the record. The div is parsed with a real XML
parser (defusedxml: no DTD, no entity expansion) and every element and attribute is checked
against the XHTML subset of R4 — the lists the reference validator uses. Only XML's own entities
(``&lt;``, ``&amp;``, …) and character references exist: HTML's named ones (``&nbsp;``, ``&reg;``)
are not XHTML without a DTD, and the reference validator refuses them too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from fhirfus.errors import Issue
from fhirfus.fhir.walk import Node

XHTML = "{http://www.w3.org/1999/xhtml}"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

ELEMENTS = frozenset(
    ["p", "br", "div", "h1", "h2", "h3", "h4", "h5", "h6", "a", "span", "b", "em", "i", "strong", "small", "big", "tt", "dfn", "q", "var", "abbr", "acronym", "cite", "blockquote", "hr", "address", "bdo", "kbd", "sub", "sup", "ul", "ol", "li", "dl", "dt", "dd", "pre", "table", "caption", "colgroup", "col", "thead", "tr", "tfoot", "tbody", "th", "td", "code", "samp", "img", "map", "area"]
)
#: Attributes allowed on every element (core, i18n and table attributes of HTML 4).
ATTRIBUTES = frozenset(
    ["title", "style", "class", "id", "lang", "dir", "accesskey", "tabindex", "span", "width", "align", "valign", "char", "charoff", "abbr", "axis", "headers", "scope", "rowspan", "colspan"]
) | {XML_LANG}
#: Attributes allowed on one element only.
ELEMENT_ATTRIBUTES = frozenset(
    ["a.href", "a.name", "a.charset", "a.type", "a.hreflang", "a.rel", "a.rev", "a.shape", "a.coords", "img.src", "img.alt", "img.longdesc", "img.height", "img.width", "img.usemap", "img.ismap", "img.border", "map.name", "area.shape", "area.coords", "area.href", "area.nohref", "area.alt", "table.summary", "table.width", "table.border", "table.frame", "table.rules", "table.cellspacing", "table.cellpadding", "pre.space", "td.nowrap", "blockquote.cite", "q.cite"]
)
URL_ATTRIBUTES = frozenset({"href", "src", "longdesc", "usemap", "cite"})
SCRIPT_SCHEMES = ("javascript:", "vbscript:", "data:text/html")
_INVISIBLE = re.compile(r"[\x00-\x20]+")


def _error(message: str, expr: str, code: str = "invalid") -> Issue:
    return Issue(message, code, "error", (expr,))


def div_issues(div: str, expr: str) -> list[Issue]:
    """What is wrong with one ``Narrative.div`` (empty list when it is acceptable)."""
    try:
        root = fromstring(div, forbid_dtd=True)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        return [_error(f"txt-1: the narrative is not well-formed XHTML ({exc})", expr, "structure")]
    if root.tag != f"{XHTML}div":
        return [_error("txt-1: the narrative must be a <div> in the XHTML namespace "
                       "(xmlns=\"http://www.w3.org/1999/xhtml\")", expr)]
    issues: list[Issue] = []
    for element in root.iter():
        issues += _element_issues(element, expr)
    if not _has_content(root):  # a warning: R4's own examples have empty divs, the reference validator passes them
        issues.append(Issue("txt-2: the narrative should have some non-whitespace content", "invalid", "warning", (expr,)))
    return issues


def _element_issues(element: Element, expr: str) -> list[Issue]:
    tag = element.tag if isinstance(element.tag, str) else ""
    if not tag.startswith(XHTML):
        return [_error(f"txt-1: element <{tag}> is not in the XHTML namespace", expr)]
    name = tag[len(XHTML):]
    if name not in ELEMENTS:
        return [_error(f"txt-1: element <{name}> is not allowed in narrative (no scripts, forms, frames, "
                       "objects, head or body)", expr)]
    issues = []
    for attribute, value in element.attrib.items():
        if attribute.lower().startswith("on"):
            issues.append(_error(f"txt-1: event attribute '{attribute}' on <{name}> is not allowed", expr))
        elif attribute not in ATTRIBUTES and f"{name}.{attribute}" not in ELEMENT_ATTRIBUTES:
            issues.append(_error(f"txt-1: attribute '{attribute}' is not allowed on <{name}>", expr))
        elif attribute in URL_ATTRIBUTES and _INVISIBLE.sub("", value).lower().startswith(SCRIPT_SCHEMES):
            issues.append(_error(f"txt-1: a script URL in '{attribute}' of <{name}> is not allowed", expr))
    return issues


def _has_content(root: Element) -> bool:
    """txt-2: some text, or an image."""
    for element in root.iter():
        if (element.text and element.text.strip()) or (element.tail and element.tail.strip() and element is not root):
            return True
        if element.tag == f"{XHTML}img":
            return True
    return False


def narrative_issues(nodes: Iterable[Node]) -> list[Issue]:
    """Issues of every ``xhtml`` value among the walked nodes (``text.div``, contained ones too)."""
    issues: list[Issue] = []
    for node in nodes:
        if node.type == "xhtml" and not node.primitive and isinstance(node.value, str) and node.value:
            issues += div_issues(node.value, node.expr)
    return issues
