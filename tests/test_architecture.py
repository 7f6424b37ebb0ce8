"""Rules of the code's shape that a reviewer could miss, checked on the source itself."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fhirfus"
#: The tables whose rows belong to sites.
SITE_TABLES = {"resources", "resource_history"}
#: Store modules that write those tables or are the filter itself; every other reader goes through
#: ``fhirfus.store.visibility.Visibility``.
MAY_TOUCH = {"store/tables.py", "store/visibility.py", "store/repository.py", "store/indexer.py", "store/rows.py"}
SQL_TEXT = re.compile(r"\b(FROM|JOIN|INTO|UPDATE)\s+(resources|resource_history)\b", re.IGNORECASE)


def _modules() -> list[tuple[str, ast.Module, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        found.append((path.relative_to(PACKAGE).as_posix(), ast.parse(source), source))
    return found


def test_only_the_store_reaches_the_resource_tables_and_every_reader_goes_through_visibility() -> None:
    """One confinement point: outside these modules the site-owned tables cannot be named, so a new
    read path has no way to them but ``Visibility.resources()`` / ``.history()``."""
    offenders = []
    for name, tree, source in _modules():
        if name in MAY_TOUCH:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "fhirfus.store.tables":
                offenders += [f"{name}: imports {a.name}" for a in node.names if a.name in SITE_TABLES | {"*"}]
            if isinstance(node, ast.Attribute) and node.attr in SITE_TABLES and isinstance(node.value, ast.Name) \
                    and node.value.id == "tables":
                offenders.append(f"{name}: tables.{node.attr}")
        offenders += [f"{name}: SQL text '{m.group(0)}'" for m in SQL_TEXT.finditer(source)]
    assert offenders == []


def test_the_caller_is_passed_in_not_read_from_a_context_variable() -> None:
    users = [name for name, _, source in _modules() if "ContextVar" in source or "contextvars" in source]
    assert users == []
