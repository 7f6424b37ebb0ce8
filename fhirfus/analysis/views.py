"""The ViewDefinitions behind the analysis dataset (``fhirfus/ig/views/*.json``), compiled once.

Each view flattens one resource type into rows; the policy check needs, per column, its FHIR
type, every FHIRPath that reaches it (``forEach`` included) and its closed vocabulary, given on
the column as a SQL-on-FHIR ``tag``: ``fhirfus-codesystem`` (the codes of a fhirfus CodeSystem in
``fhirfus/ig/terminology``) or ``fhirfus-allowed`` (a space-separated list).

A view may also carry a store pre-filter (extension ``PREFILTER_URL``, a JSON document as
``valueString``): a JSONB containment the resource must satisfy, which PostgreSQL checks before
sending the document. It only narrows what the view's ``where`` would drop anyway (TWSTRS scores
among all Observations), and it is used only when every view of the type declares one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fhirfus.analysis.deid.policy import ViewColumn
from fhirfus.ig import code_displays, folder
from fhirfus.sqlonfhir.fastpath import FastView, compile_fast

VIEW_DIR = folder("views")
PREFILTER_URL = "https://fhirfus.org/fhir/StructureDefinition/view-store-prefilter"


@dataclass(frozen=True)
class AnalysisView:
    name: str
    file: str
    resource: str
    compiled: FastView
    columns: tuple[ViewColumn, ...]
    sources: Mapping[str, str]  # column → FHIRPath from the resource (for the data dictionary)
    prefilter: dict | None = None  # JSONB containment the stored document must satisfy

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


def _allowed(column: Mapping[str, Any]) -> frozenset[str] | None:
    for tag in column.get("tag", []):
        if tag.get("name") == "fhirfus-codesystem":
            codes = code_displays(str(tag.get("value")))
            if not codes:
                raise ValueError(f"column {column['name']}: unknown CodeSystem {tag.get('value')}")
            return frozenset(codes)
        if tag.get("name") == "fhirfus-allowed":
            return frozenset(str(tag.get("value", "")).split())
    return None


def _walk(select: Mapping[str, Any], prefix: tuple[str, ...]) -> Iterator[tuple[Mapping[str, Any], tuple[str, ...]]]:
    """(column, the forEach paths above it) for every column of a select tree."""
    iterate = select.get("forEach") or select.get("forEachOrNull")
    here = (*prefix, iterate) if iterate else prefix
    for column in select.get("column", []):
        yield column, here
    for child in (*select.get("select", []), *select.get("unionAll", [])):
        yield from _walk(child, here)


def load_view(path: Path) -> AnalysisView:
    return view_from(json.loads(path.read_text(encoding="utf-8")), path.name, path.stem)


def view_from(view: Mapping[str, Any], file: str, default_name: str) -> AnalysisView:
    """A ViewDefinition with what the policy check needs per column (any view, not only the guide's)."""
    compiled = compile_fast(dict(view))  # raises ViewDefinitionError for an invalid view
    name = str(view.get("name") or default_name)
    columns: dict[str, ViewColumn] = {}
    sources: dict[str, str] = {}
    for column, above in _walk({"select": view["select"]}, ()):
        paths = (*above, column["path"])
        columns[column["name"]] = ViewColumn(name, column["name"], column.get("type"), paths, _allowed(column))
        sources[column["name"]] = f"{compiled.resource}." + ".".join(paths)
    ordered = tuple(columns[c["name"]] for c in compiled.columns)
    prefilter = next((json.loads(e["valueString"]) for e in view.get("extension", []) if e.get("url") == PREFILTER_URL),
                     None)
    return AnalysisView(name, file, compiled.resource, compiled, ordered, sources, prefilter)


@cache
def analysis_views(directory: Path = VIEW_DIR) -> tuple[AnalysisView, ...]:
    """Every view of ``fhirfus/ig/views`` (file-name order), compiled once per process."""
    return tuple(load_view(p) for p in sorted(directory.glob("*.json")))


def view_by_name(name: str) -> AnalysisView:
    for view in analysis_views():
        if view.name == name:
            return view
    raise KeyError(name)
