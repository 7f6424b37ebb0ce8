"""Rows of a site file → one transaction Bundle per patient, plus a precise list of bad rows.

Every resource gets a stable identity: an identifier ``https://fhirfus.org/fhir/sid/site-record/{site}``
with the spec's key (Patients: ``…/site-patient/{site}`` with the site's patient number), and is
written with a conditional update on it. A re-import therefore matches what is stored and changes
nothing; an edited row updates its resource. A patient with any bad row is left out entirely.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from fhirfus.domain import rules
from fhirfus.errors import FhirError
from fhirfus.fhir.validation import resource_issues
from fhirfus.ingest.mapping.spec import MappingSpec, ResourceSpec
from fhirfus.ingest.mapping.template import DROP, Context, render
from fhirfus.ingest.mapping.values import ISO, CellError, Locale, derive, read_cell

PATIENT_SYSTEM = "https://fhirfus.org/fhir/sid/site-patient/{site}"
RECORD_SYSTEM = "https://fhirfus.org/fhir/sid/site-record/{site}"
SITE_LABEL_SYSTEM = "https://fhirfus.org/fhir/CodeSystem/site"
NAMESPACE = uuid.UUID("6f1c2b1e-8f0a-4f57-9a53-3d1f5f7f0a11")


@dataclass(frozen=True)
class RowError:
    """One reason a row was rejected (``line`` counts the header as line 1, like a spreadsheet)."""

    line: int
    patient: str | None
    column: str
    value: str
    reason: str


@dataclass
class PatientRecord:
    key: str
    rows: list[tuple[int, dict[str, Any], dict[str, str]]] = field(default_factory=list)  # (line, typed, raw)


@dataclass
class MappingResult:
    bundles: dict[str, dict]                      # patient key → transaction Bundle
    errors: list[RowError]
    rejected_patients: set[str]
    rows: int
    lines: dict[str, int] = field(default_factory=dict)  # fullUrl → the file line that produced it


def _typed_row(spec: MappingSpec, line: int, raw: dict[str, str], where: Locale = ISO) -> tuple[dict[str, Any], list[RowError]]:
    typed: dict[str, Any] = {}
    errors: list[RowError] = []
    patient = (raw.get(spec.patient_key) or "").strip() or None
    for name, column in spec.columns.items():
        text = derive(column, raw) if column.derive else raw.get(name)
        try:
            typed[name] = read_cell(column, text, where)
        except CellError as exc:
            errors.append(RowError(line, patient, name, (text or "").strip(), exc.reason))
    return typed, errors


def check_header(spec: MappingSpec, header: Iterable[str]) -> list[str]:
    """Declared (non-derived) columns missing from the file."""
    present = set(header)
    return [n for n, c in spec.columns.items() if not c.derive and n not in present]


def group_rows(
    spec: MappingSpec, rows: Iterable[dict[str, str]], where: Locale = ISO,
) -> tuple[dict[str, PatientRecord], list[RowError], int]:
    patients: dict[str, PatientRecord] = {}
    errors: list[RowError] = []
    count = 0
    for line, raw in enumerate(rows, start=2):
        count += 1
        typed, row_errors = _typed_row(spec, line, raw, where)
        errors += row_errors
        key = typed.get(spec.patient_key)
        if key is None:
            continue  # already reported as "required value missing": cannot belong to anyone
        patients.setdefault(str(key), PatientRecord(str(key))).rows.append((line, typed, raw))
    return patients, errors, count


def _matches(when: Mapping[str, Any], values: Mapping[str, Any]) -> bool:
    for column, expected in when.items():
        allowed = expected if isinstance(expected, list) else [expected]
        if values.get(column) not in allowed:
            return False
    return True


@dataclass
class _Built:
    spec: ResourceSpec
    key: str
    line: int
    resource: dict
    full_url: str


class _PatientBuilder:
    """Renders the resources of one patient, resolving ``{@name}`` between them."""

    def __init__(self, spec: MappingSpec, site: str, record: PatientRecord) -> None:
        self.spec, self.site, self.record = spec, site, record
        self.built: list[_Built] = []
        self.patient_level: dict[str, str] = {}
        self.errors: list[RowError] = []

    def full_url(self, key: str) -> str:
        return f"urn:uuid:{uuid.uuid5(NAMESPACE, f'{self.site}|{key}')}"

    def identity(self, resource_spec: ResourceSpec, context: Context) -> str | None:
        key = render(resource_spec.key, context)
        return None if key is DROP else str(key)

    def items(self, values: Mapping[str, Any]) -> Any:
        def items_for(attribute: str) -> list[tuple[str, Any]]:
            found = []
            for name, column in self.spec.columns.items():
                label = column.questionnaire_item if attribute == "questionnaire_item" else column.attributes.get(attribute)
                if label is not None and values.get(name) is not None:
                    found.append((label, values[name]))
            return found
        return items_for

    def context(self, values: Mapping[str, Any], row_level: dict[str, str]) -> Context:
        def reference(name: str) -> str | None:
            return row_level.get(name) or self.patient_level.get(name)
        return Context({**values, "site": self.site}, reference, self.items(values))

    def add(self, resource_spec: ResourceSpec, context: Context, line: int, row_level: dict[str, str]) -> None:
        key = self.identity(resource_spec, context)
        if key is None:
            self.errors.append(RowError(line, self.record.key, "", "", (
                f"{resource_spec.name}: its identity '{resource_spec.key}' needs a value this row does not have")))
            return
        rendered = render(resource_spec.template, context)
        if rendered is DROP:
            return
        full_url = self.full_url(key)
        if resource_spec.per == "patient":
            self.patient_level[resource_spec.name] = full_url
        else:
            row_level[resource_spec.name] = full_url
        if any(b.key == key for b in self.built):
            return  # same identity from another row (e.g. per-patient data repeated on every row)
        self.built.append(_Built(resource_spec, key, line, rendered, full_url))

    def patient_values(self) -> dict[str, Any]:
        """The values ``per: patient`` resources render from: the first row's, except that each
        column they use comes from the first row that has it (a follow-up or repeat row may leave
        it blank). A row with a *different* value (another sex, another birth date) is an error:
        one patient, one value; nothing silently picks one of the two."""
        merged = dict(self.record.rows[0][1])
        seen: dict[str, tuple[int, Any]] = {}
        for line, values, raw in self.record.rows:
            for column in self.spec.patient_columns:
                value = values.get(column)
                if value is None:
                    continue
                if column not in seen:
                    seen[column] = (line, value)
                    merged[column] = value
                elif seen[column][1] != value:
                    self.errors.append(RowError(line, self.record.key, column, (raw.get(column) or "").strip(), (
                        f"differs from line {seen[column][0]} ({seen[column][1]}): a value of the patient "
                        "must be the same on every row")))
        return merged

    def ordinals(self, resource_spec: ResourceSpec) -> dict[int, int]:
        """line → ``{$ordinal}`` of the rows ``resource_spec`` is made from."""
        if resource_spec.ordinal is None:
            return {}
        by, within = resource_spec.ordinal["by"], tuple(resource_spec.ordinal.get("within") or ())
        rows = [(line, values) for line, values, _ in self.record.rows if _matches(resource_spec.when, values)]
        rows.sort(key=lambda item: (str(item[1].get(by) or ""), item[0]))
        counters: dict[tuple, int] = {}
        numbers = {}
        for line, values in rows:
            group = tuple(str(values.get(c)) for c in within)
            counters[group] = counters.get(group, 0) + 1
            numbers[line] = counters[group]
        return numbers

    def build(self) -> list[_Built]:
        first_line = self.record.rows[0][0]
        ordinals = {r.name: self.ordinals(r) for r in self.spec.resources}
        values = self.patient_values()
        for resource_spec in (r for r in self.spec.resources if r.per == "patient"):
            self.add(resource_spec, self.context(values, {}), first_line, {})
        for line, values, _ in self.record.rows:
            row_level: dict[str, str] = {}
            for resource_spec in (r for r in self.spec.resources if r.per != "patient"):
                if not _matches(resource_spec.when, values):
                    continue
                base = self.context(values, row_level)
                if line in ordinals[resource_spec.name]:
                    base = base.child(**{"$ordinal": ordinals[resource_spec.name][line]})
                if resource_spec.per == "column":
                    for column in resource_spec.columns:
                        if values.get(column) is None:
                            continue
                        meta = self.spec.column(column).attributes
                        extra = {"$column": column, "$value": values[column], **{f"${k}": v for k, v in meta.items()}}
                        self.add(resource_spec, base.child(**extra), line, row_level)
                elif resource_spec.separate:
                    for value in values.get(resource_spec.separate) or []:
                        self.add(resource_spec, base.child(**{"$": value}), line, row_level)
                else:
                    self.add(resource_spec, base, line, row_level)
        return self.built


@cache
def _identifier_cardinality(res_type: str) -> str | None:
    """"list", "single" or None (no identifier element) for this type, from the R4 models."""
    field_info = get_fhir_model_class(res_type).model_fields.get("identifier")
    if field_info is None:
        return None
    return "list" if "List" in str(field_info.annotation) else "single"


def _finish(built: _Built, site: str, patient_key: str) -> dict:
    """Identity, site label and request of one entry.

    The Patient is a conditional update on its site identifier (it may already exist, e.g. from
    an EHR feed); every other resource has a deterministic id from (site, key), so it is found
    again on re-import even where its type has no ``identifier`` search parameter.
    """
    resource = built.resource
    kind = resource["resourceType"]
    system, value = (PATIENT_SYSTEM.format(site=site), patient_key) if kind == "Patient" else (
        RECORD_SYSTEM.format(site=site), built.key)
    identity = {"system": system, "value": value}
    cardinality = _identifier_cardinality(kind)
    if cardinality == "list":
        identifiers = [i for i in resource.get("identifier", []) if i.get("system") != system]
        resource["identifier"] = [identity, *identifiers]
    elif cardinality == "single":
        resource["identifier"] = identity
    resource.setdefault("meta", {})["security"] = [{"system": SITE_LABEL_SYSTEM, "code": site}]
    if kind == "Patient":
        url = f"Patient?identifier={system}|{value}"
    else:
        resource["id"] = built.full_url.removeprefix("urn:uuid:")
        url = f"{kind}/{resource['id']}"
    return {"fullUrl": built.full_url, "resource": resource, "request": {"method": "PUT", "url": url}}


def _resource_errors(built: _Built, patient: str) -> list[RowError]:
    issues = resource_issues(built.resource) or rules.domain_errors(built.resource)
    return [
        RowError(built.line, patient, ",".join(i.expression) or built.resource["resourceType"], "",
                 f"{built.spec.name}: {i.diagnostics}")
        for i in issues
    ]


def map_rows(spec: MappingSpec, rows: Iterable[dict[str, str]], site: str, where: Locale = ISO) -> MappingResult:
    """Map every row; patients with any error are left out (their errors are all reported)."""
    patients, errors, count = group_rows(spec, rows, where)
    rejected = {e.patient for e in errors if e.patient}
    bundles: dict[str, dict] = {}
    lines: dict[str, int] = {}
    for key, record in patients.items():
        if key in rejected:
            continue
        builder = _PatientBuilder(spec, site, record)
        try:
            built = builder.build()
        except (FhirError, KeyError, TypeError, ValueError) as exc:
            errors.append(RowError(record.rows[0][0], key, "", "", f"mapping failed: {exc}"))
            rejected.add(key)
            continue
        problems = builder.errors + [e for b in built for e in _resource_errors(b, key)]
        if problems:
            errors += problems
            rejected.add(key)
            continue
        entries = [_finish(b, site, key) for b in built]
        lines.update((b.full_url, b.line) for b in built)
        bundles[key] = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    errors.sort(key=lambda e: (e.line, e.column))
    return MappingResult(bundles, errors, rejected, count, lines)
