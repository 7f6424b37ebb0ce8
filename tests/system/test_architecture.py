"""Rules of the code's shape that a reviewer could miss, checked on the source itself."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "fhirfus"
#: The tables whose rows belong to sites.
SITE_TABLES = {"resources", "resource_history"}
#: Store modules that write those tables or are the filter itself; every other reader goes through
#: ``fhirfus.db.visibility.Visibility``.
MAY_TOUCH = {"db/tables.py", "db/visibility.py", "db/rows.py", "store/repository.py", "search/index.py"}
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
        if name in MAY_TOUCH or name.startswith("db/migrations/"):  # migrations change the schema itself
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "fhirfus.db.tables":
                offenders += [f"{name}: imports {a.name}" for a in node.names if a.name in SITE_TABLES | {"*"}]
            if isinstance(node, ast.Attribute) and node.attr in SITE_TABLES and isinstance(node.value, ast.Name) \
                    and node.value.id == "tables":
                offenders.append(f"{name}: tables.{node.attr}")
        offenders += [f"{name}: SQL text '{m.group(0)}'" for m in SQL_TEXT.finditer(source)]
    assert offenders == []


def test_the_caller_is_passed_in_not_read_from_a_context_variable() -> None:
    users = [name for name, _, source in _modules() if "ContextVar" in source or "contextvars" in source]
    assert users == []


#: The layers, lowest first. A package imports only from lower layers and from itself: no upward
#: import, and no import between two packages of one layer (so no cycle between packages).
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"__init__", "errors", "settings", "heap", "process", "addresses"}),  # errors, settings, SSRF checks
    frozenset({"fhir", "ig", "testing"}),                    # FHIR knowledge, the guide's data; test helpers
    frozenset({"fhirpath", "terminology", "testing_hosts"}),                  # FHIRPath: paths compiled, the engine; code systems, value sets, concept maps; hosts for the scale-out tests (above testing)
    frozenset({"db", "sqlonfhir"}),                          # schema, engine, rows, confinement; the view runner
    frozenset({"search"}),                                   # parameters, extraction, index rows, SQL
    frozenset({"store"}),                                    # versioned resources and history
    frozenset({"auth", "domain"}),                           # callers, tokens, audit; TWSTRS, profiles, derived data
    frozenset({"interactions"}),                             # the REST interactions
    frozenset({"operations", "bulk", "analysis", "ingest", "pull", "subscriptions"}),  # $operations, Bulk Data, analysis export, imports, pulls, Subscriptions
    frozenset({"api", "cli"}),                               # HTTP and the command line
)
LEVEL = {package: level for level, packages in enumerate(LAYERS) for package in packages}


def _package(name: str) -> str:
    """``fhirfus.search.index`` → ``search``; ``fhirfus.errors`` → ``errors``; ``fhirfus`` → ``__init__``."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(module: str, tree: ast.Module) -> Iterator[tuple[str, int]]:
    """The fhirfus modules (or packages) ``module`` imports, with line numbers."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = module.split(".")[: -node.level]
            target = ".".join(base + ([node.module] if node.module else []))
            yield target, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "fhirfus":
            if node.module == "fhirfus":
                yield from ((f"fhirfus.{a.name}", node.lineno) for a in node.names)
            else:
                yield node.module, node.lineno
        elif isinstance(node, ast.Import):
            yield from ((a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "fhirfus")


def _module_name(relative: str) -> str:
    return "fhirfus." + relative.removesuffix(".py").replace("/", ".").removesuffix(".__init__")


def test_every_package_has_a_layer() -> None:
    packages = {_package(_module_name(name)) for name, _, _ in _modules()}
    assert packages - set(LEVEL) == set(), "a new package needs its place in LAYERS"


def test_imports_go_only_down_the_layers() -> None:
    upward = []
    for name, tree, _ in _modules():
        module = _module_name(name)
        source = _package(module)
        for target, line in _imports(module, tree):
            imported = _package(target)
            if imported == "__init__" and target != "fhirfus":
                imported = target.split(".")[1]
            if imported != source and LEVEL.get(imported, -1) >= LEVEL[source]:
                upward.append(f"{name}:{line} ({source}) imports {target} ({imported})")
    assert upward == []


def test_no_module_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    known = {_module_name(name) for name, _, _ in _modules()}
    for name, tree, _ in _modules():
        module = _module_name(name)
        targets = set()
        for target, _line in _imports(module, tree):
            while target and target not in known:  # ``from fhirfus.store import repository`` names a module
                target = target.rpartition(".")[0]
            if target and target != module:
                targets.add(target)
        graph[module] = targets
    # packages' __init__ modules that only describe the package import nothing, so any cycle is real
    visiting: set[str] = set()
    done: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        if node in done:
            return
        if node in visiting:
            cycles.append([*path[path.index(node):], node])
            return
        visiting.add(node)
        for target in sorted(graph.get(node, ())):
            visit(target, [*path, target])
        visiting.discard(node)
        done.add(node)

    for module in sorted(graph):
        visit(module, [module])
    assert cycles == []


#: Tests of the server as a whole (its shape, packaging, the README, real clients, several hosts).
WHOLE_SERVER_TESTS = "system"


def test_the_tests_mirror_the_packages() -> None:
    """A test lives in ``tests/<package>/`` beside the package it specifies (``tests/search/`` for
    ``fhirfus/search/``), or in ``tests/system/`` when it checks the server as a whole: a new engineer
    finds a package's specification where the package is, and no test is left at the top."""
    tests = Path(__file__).resolve().parents[1]
    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert not sorted(path.name for path in tests.glob("test_*.py")), "tests belong in a package's folder"
    folders = {path.parent.name for path in tests.glob("*/test_*.py")}
    assert folders <= packages | {WHOLE_SERVER_TESTS}, folders - packages
