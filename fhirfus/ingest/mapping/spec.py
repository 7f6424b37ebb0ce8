"""Mapping specs: the YAML files of ``fhirfus/ig/inbound`` loaded into typed, checked objects.

A spec says how to read each column (type, value map, range, split, required) and which FHIR
resources a patient's rows produce (templates, conditions, identity keys). See
``fhirfus/ig/inbound/site-registry.yaml`` for the annotated reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from fhirfus.errors import InvalidRequest
from fhirfus.ig import folder
from fhirfus.ingest.mapping.template import columns_used

INBOUND_DIR = folder("inbound")
COLUMN_TYPES = ("string", "code", "date", "integer", "decimal")


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    type: str = "string"
    required: bool = False
    values: dict[str, Any] | None = None          # value map: file value → mapped value
    split: str | None = None                      # multi-valued cells, e.g. "PTT+Vo" with "+"
    minimum: float | None = None
    maximum: float | None = None
    questionnaire_item: str | None = None         # a TWSTRS linkId: the range comes from the Questionnaire
    derive: dict[str, str] | None = None          # {"from": column, "pattern": regex with one group}
    attributes: dict[str, Any] = field(default_factory=dict)  # free data for templates ({$code}, {$unit} …)


@dataclass(frozen=True)
class ResourceSpec:
    name: str
    template: dict
    key: str
    per: str = "row"                              # "patient": once per patient; "row"; "column": per column
    when: dict[str, Any] = field(default_factory=dict)
    columns: tuple[str, ...] = ()                 # for per: column
    separate: str | None = None                   # a split column: one resource per value
    #: ``{$ordinal}``: the row's position among the patient's rows of this resource with the same
    #: ``within`` values, ordered by ``by`` (a visit number that survives a corrected date)
    ordinal: dict[str, Any] | None = None


@dataclass(frozen=True)
class MappingSpec:
    name: str
    description: str
    patient_key: str
    columns: dict[str, ColumnSpec]
    resources: tuple[ResourceSpec, ...]
    source: Path
    locale: str | None = None                     # how the site writes dates and numbers (values.LOCALES)

    def column(self, name: str) -> ColumnSpec:
        return self.columns[name]

    @cached_property
    def patient_columns(self) -> list[str]:
        """The columns the ``per: patient`` templates read (their values must agree across a patient's rows)."""
        templates = [r.template for r in self.resources if r.per == "patient"]
        return sorted(set().union(*map(columns_used, templates)) & set(self.columns))


def _column(name: str, raw: dict[str, Any]) -> ColumnSpec:
    known = {"type", "required", "values", "split", "min", "max", "questionnaire_item", "derive"}
    kind = raw.get("type", "string")
    if kind not in COLUMN_TYPES:
        raise InvalidRequest(f"column '{name}': unknown type '{kind}' (use {', '.join(COLUMN_TYPES)})", name)
    return ColumnSpec(
        name=name, type=kind, required=bool(raw.get("required", False)),
        values={str(k): v for k, v in raw["values"].items()} if raw.get("values") else None,
        split=raw.get("split"), minimum=raw.get("min"), maximum=raw.get("max"),
        questionnaire_item=raw.get("questionnaire_item"), derive=raw.get("derive"),
        attributes={k: v for k, v in raw.items() if k not in known},
    )


def _resource(raw: dict[str, Any]) -> ResourceSpec:
    for required in ("name", "template", "key"):
        if required not in raw:
            raise InvalidRequest(f"resource spec needs '{required}': {raw}", required)
    per = raw.get("per", "row")
    if per not in ("patient", "row", "column"):
        raise InvalidRequest(f"resource '{raw['name']}': per must be patient, row or column", "per")
    ordinal = raw.get("ordinal")
    if ordinal is not None and (not isinstance(ordinal, dict) or not isinstance(ordinal.get("by"), str)):
        raise InvalidRequest(f"resource '{raw['name']}': ordinal needs 'by: column' (and optional 'within: [columns]')", "ordinal")
    return ResourceSpec(
        name=raw["name"], template=raw["template"], key=raw["key"], per=per, when=raw.get("when") or {},
        columns=tuple(raw.get("columns") or ()), separate=raw.get("separate"), ordinal=ordinal,
    )


def available() -> list[str]:
    return sorted(p.stem for p in INBOUND_DIR.glob("*.yaml"))


def load_spec(name: str) -> MappingSpec:
    """Load ``fhirfus/ig/inbound/NAME.yaml`` (or a path to a YAML file)."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else INBOUND_DIR / f"{name}.yaml"
    if not path.is_file():
        raise InvalidRequest(f"Unknown mapping '{name}'; available: {', '.join(available())}", "mapping")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    columns = {n: _column(n, c or {}) for n, c in (raw.get("columns") or {}).items()}
    spec = MappingSpec(
        name=raw.get("name", path.stem), description=raw.get("description", ""),
        patient_key=raw["patient_key"], columns=columns,
        resources=tuple(_resource(r) for r in raw.get("resources") or ()), source=path,
        locale=raw.get("locale"),
    )
    if spec.patient_key not in columns:
        raise InvalidRequest(f"patient_key '{spec.patient_key}' is not a declared column", "patient_key")
    return spec
