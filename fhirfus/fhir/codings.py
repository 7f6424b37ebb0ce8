"""Rules of ``Coding.system`` that the reference validator applies beyond the uri format.

Why: a code means something only within its code system, named by an absolute URI; a relative
``system`` ("snomed") or one naming a ValueSet instead of a CodeSystem makes the code unreadable for
everyone who receives it, and no terminology lookup can repair it later.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from fhirfus.errors import Issue
from fhirfus.fhir.walk import Node

_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
VALUESET_BASE = "http://hl7.org/fhir/ValueSet/"


def coding_issues(nodes: Iterable[Node]) -> list[Issue]:
    """Issues of every Coding among the walked nodes."""
    issues = []
    for node in nodes:
        if node.type != "Coding" or node.primitive or not isinstance(node.value, dict):
            continue
        system = node.value.get("system")
        if not isinstance(system, str) or not system:
            continue
        if not _ABSOLUTE.match(system):
            issues.append(Issue(f"Coding.system must be an absolute URI, not '{system}'", "value", "error",
                                (f"{node.expr}.system",)))
        elif system.startswith(VALUESET_BASE):
            issues.append(Issue(f"Coding.system names a ValueSet ('{system}'), not a CodeSystem", "value", "error",
                                (f"{node.expr}.system",)))
    return issues
