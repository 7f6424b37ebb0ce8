"""An import as a plan: what a site file would change, shown before anything is written.

``plan_import`` reads the files, maps them and compares the result with what the site has stored:
rejected rows (line, column, value, reason in words), the valid rows held back because their
patient has a rejected row, and every resource added, changed or removed. ``commit_plan`` writes
the plan in one transaction with a Provenance; not committing is cancelling.

Two modes. ``replace`` (the default): a site file is the site's current truth for the patients
it lists, so a stored record of a listed patient that the file no longer produces (a removed row,
the old date of a corrected assessment) is deleted, as a versioned delete. ``merge``: the file
is partial; it adds and updates, and removes nothing.

A plan refuses (``conflicts``) to mix the file with data it does not own: a patient of the file
already stored under another site or under no site, or a site that holds the demo cohort.

Use: ``plan = plan_import(store, "site-registry", "A", [path], caller=who)``; show ``plan.errors``,
``plan.held_back``, ``plan.changes``, ``plan.summary()``; then ``commit_plan(store, plan, who)`` (it
refuses a plan the stored data no longer matches) or drop the plan to cancel.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from fhirfus.auth.access import SERVER, Access, unrestricted
from fhirfus.db.tables import search_token
from fhirfus.db.visibility import EVERYTHING, Visibility, check_site_code
from fhirfus.errors import Conflict, Forbidden, InvalidRequest
from fhirfus.ingest.files import SiteTable, read_table
from fhirfus.ingest.mapping.engine import PATIENT_SYSTEM, RECORD_SYSTEM, MappingResult, RowError, check_header, map_rows
from fhirfus.ingest.mapping.spec import MappingSpec, ResourceSpec, load_spec
from fhirfus.ingest.mapping.values import LOCALES, CellError, Locale, locale
from fhirfus.interactions import bundles
from fhirfus.store import repository
from fhirfus.store.repository import Store

MODES = ("replace", "merge")
MAPPING_BASE = "https://fhirfus.org/fhir/mapping/"
#: The demo cohort's Group (``fhirfus demo``): real site data must not be mixed into it unnoticed.
DEMO_GROUP_ID = "demo-cohort"
_DATE_ELEMENTS = ("authored", "performedDateTime", "effectiveDateTime", "date", "birthDate")


@dataclass(frozen=True)
class Difference:
    """One element of a stored record that the import changes: what a data manager checks before
    committing (a corrected visit date, a new score)."""

    element: str             # the element's path, list items by linkId where they have one
    old: str | None          # None: the element is new
    new: str | None          # None: the element goes

    def text(self) -> str:
        return f"{self.element}: {self.old if self.old is not None else '(none)'} → " \
               f"{self.new if self.new is not None else '(none)'}"


@dataclass(frozen=True)
class Change:
    """One resource the import adds, changes or removes."""

    action: str              # "added", "changed", "removed"
    resource_type: str
    res_id: str | None       # None: a Patient not stored yet (its id is assigned on commit)
    patient: str             # the site's patient number
    record: str              # what the resource is, e.g. "session/2" or "twstrs/2022-03-01"
    kind: str                # the mapping's resource name (session, twstrs, parameter …)
    date: str | None
    line: int | None         # the file line producing it (None for a removal)
    differences: tuple[Difference, ...] = ()  # of a "changed" record: old → new, element by element

    def described(self) -> str:
        """What the change is, in words: the values a changed record changes."""
        if self.action == "changed":
            return "; ".join(d.text() for d in self.differences) or "stored form differs"
        return f"{self.action} {self.kind}" + (f" of {self.date}" if self.date else "")


@dataclass(frozen=True)
class HeldBack:
    """A patient with a rejected row: their valid rows are not imported either."""

    patient: str
    valid_lines: tuple[int, ...]
    rejected_lines: tuple[int, ...]

    def sentence(self) -> str:
        lines = ", ".join(map(str, self.valid_lines)) or "none"
        return (f"patient {self.patient}: rows {', '.join(map(str, self.rejected_lines))} rejected, so the valid "
                f"rows ({lines}) are held back too; nothing of this patient changes")


@dataclass
class ImportPlan:
    spec: MappingSpec
    site: str
    mode: str
    locale: Locale
    tables: list[SiteTable]
    digest: str
    result: MappingResult
    changes: list[Change] = field(default_factory=list)
    unchanged: int = 0
    held_back: list[HeldBack] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    kept_patients: int = 0   # stored patients of the site that the file does not list
    locale_recognised: bool = False  # no locale was given; the file's dates and numbers named it

    @property
    def errors(self) -> list[RowError]:
        return self.result.errors

    @property
    def rows(self) -> int:
        return self.result.rows

    @cached_property
    def patients(self) -> dict[str, str]:
        """Accepted patients of the file → "added", "changed" or "unchanged"."""
        touched: dict[str, set[str]] = defaultdict(set)
        for change in self.changes:
            touched[change.patient].add(change.action)
        status = {}
        for key in self.result.bundles:
            if any(c.patient == key and c.resource_type == "Patient" and c.action == "added" for c in self.changes):
                status[key] = "added"
            else:
                status[key] = "changed" if touched.get(key) else "unchanged"
        return status

    def count(self, action: str, kinds: set[str] | None = None) -> int:
        return sum(c.action == action and (kinds is None or c.kind in kinds) for c in self.changes)

    @property
    def visit_kinds(self) -> set[str]:
        """The mapping's per-row resources that stand for a visit (not its details)."""
        return {r.name for r in self.spec.resources if r.per == "row" and not r.separate}

    @property
    def listed_kinds(self) -> set[str]:
        """What the preview lists row by row: the patient, visits and per-row events (adverse
        events); an added visit's details (its parameters) are part of the visit."""
        return {"patient"} | {r.name for r in self.spec.resources if r.per == "row"}

    def listed_changes(self) -> list[Change]:
        """The changes a data manager reads one by one, per patient: added patients and visits,
        and every changed or removed record (a changed parameter too)."""
        kinds = self.listed_kinds
        order = {"removed": 0, "changed": 1, "added": 2}
        shown = [c for c in self.changes if c.resource_type != "Organization" and (c.kind in kinds or c.action != "added")]
        return sorted(shown, key=lambda c: (c.patient, order.get(c.action, 3), c.record))

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    @property
    def committable(self) -> bool:
        return not self.conflicts

    def summary(self) -> str:
        visits = self.visit_kinds
        status = list(self.patients.values())
        return (
            f"{self.rows} rows; patients {status.count('added')} added, {status.count('changed')} changed, "
            f"{status.count('unchanged')} unchanged, {len(self.result.rejected_patients)} rejected; "
            f"visits {self.count('added', visits)} added, {self.count('changed', visits)} changed, "
            f"{self.count('removed', visits)} removed; resources {self.count('added')} added, "
            f"{self.count('changed')} changed, {self.count('removed')} removed, {self.unchanged} unchanged"
        )


def _require_site(caller: Access, site: str) -> None:
    if caller.site is not None and caller.site != site:
        raise Forbidden(f"Client '{caller.client_id}' belongs to site {caller.site} and may not import for site {site}", "site")


def file_digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def plan_import(
    store: Store, mapping: str, site: str, paths: list[Path], mode: str = "replace",
    locale_name: str | None = None, *, allow_demo: bool = False, caller: Access = SERVER,
) -> ImportPlan:
    """What importing ``paths`` for ``site`` would change (nothing is written). ``caller``: who
    asks (a site's people and clients import for their own site only)."""
    _require_site(caller, site)
    if mode not in MODES:
        raise InvalidRequest(f"mode must be one of {', '.join(MODES)}, got '{mode}'", "mode")
    check_site_code(site or "")
    spec = load_spec(mapping)
    try:
        told = locale(locale_name or spec.locale)
    except CellError as exc:
        raise InvalidRequest(exc.reason, "locale") from exc
    tables = [read_table(p) for p in paths]
    for table in tables:
        missing = check_header(spec, table.header)
        if missing:
            raise InvalidRequest(f"{table.name}: columns missing for mapping '{spec.name}': {', '.join(missing)}", "header")
    rows = [row for table in tables for row in table.rows]
    recognised = None if locale_name or spec.locale else recognise_locale(spec, rows)
    where = recognised or told
    result = map_rows(spec, rows, site, where)
    plan = ImportPlan(spec, site, mode, where, tables, file_digest(paths), result, locale_recognised=recognised is not None)
    plan.held_back = _held_back(spec, rows, result)
    with store.reading() as conn:
        _compare(conn, plan, rows, allow_demo)
    return plan


_DAY_FIRST_CELL = re.compile(r"\d{1,2}\.\d{1,2}\.\d{4}")
_COMMA_CELL = re.compile(r"[+-]?\d+,\d+")


def recognise_locale(spec: MappingSpec, rows: list[dict[str, str]]) -> Locale | None:
    """``de`` when the file leaves no doubt: every date cell is day-first (``15.03.2022``) and no
    number cell has a decimal point while some have a decimal comma, or the reverse holds for
    numbers with no date in ISO form. A file that mixes the two is read as ISO and its cells are
    reported with the hint to say ``--locale``."""
    dates = [r.get(n, "").strip() for r in rows for n, c in spec.columns.items() if c.type == "date" and not c.derive]
    numbers = [r.get(n, "").strip() for r in rows for n, c in spec.columns.items() if c.type == "decimal" and not c.derive]
    dates, numbers = [d for d in dates if d], [n for n in numbers if n]
    day_first = bool(dates) and all(_DAY_FIRST_CELL.fullmatch(d) for d in dates)
    any_iso_date = any(re.fullmatch(r"\d{4}-\d{2}-\d{2}", d) for d in dates)
    commas = any(_COMMA_CELL.fullmatch(n) for n in numbers) and not any("." in n for n in numbers)
    if (day_first and not any("." in n and "," not in n for n in numbers)) or (commas and not any_iso_date):
        return LOCALES["de"]
    return None


def _held_back(spec: MappingSpec, rows: list[dict[str, str]], result: MappingResult) -> list[HeldBack]:
    rejected_lines: dict[str, set[int]] = defaultdict(set)
    for error in result.errors:
        if error.patient in result.rejected_patients:
            rejected_lines[error.patient].add(error.line)
    held = []
    for key in sorted(result.rejected_patients):
        lines = [line for line, row in enumerate(rows, start=2) if (row.get(spec.patient_key) or "").strip() == key]
        bad = rejected_lines.get(key, set())
        held.append(HeldBack(key, tuple(x for x in lines if x not in bad), tuple(sorted(bad))))
    return held


@dataclass(frozen=True)
class _Stored:
    res_type: str
    res_id: str
    site: str | None
    content: dict


def _site_rows(conn: Connection, site: str) -> Iterator[_Stored]:
    rows = Visibility(site).resources()
    query = select(rows.c.res_type, rows.c.res_id, rows.c.site, rows.c.content).where(
        rows.c.site == site, rows.c.deleted.is_(False))
    for res_type, res_id, owner, content in conn.execute(query):
        yield _Stored(res_type, res_id, owner, content)


def _patients_elsewhere(conn: Connection, site: str, keys: list[str]) -> dict[str, str | None]:
    """Patients of the file stored with the site's identifier but owned by another site or none."""
    rows = EVERYTHING.resources()
    found: dict[str, str | None] = {}
    system = PATIENT_SYSTEM.format(site=site)
    for start in range(0, len(keys), 500):
        query = (select(search_token.c.code, rows.c.site)
                 .join(rows, rows.c.pk == search_token.c.resource_pk)
                 .where(search_token.c.res_type == "Patient", search_token.c.param == "identifier",
                        search_token.c.system == system, search_token.c.code.in_(keys[start:start + 500]),
                        rows.c.deleted.is_(False), rows.c.site.is_distinct_from(site)))
        found.update((code, owner) for code, owner in conn.execute(query))
    return found


def _identifier(content: dict, system: str) -> str | None:
    identifiers = content.get("identifier")
    for identifier in identifiers if isinstance(identifiers, list) else [identifiers] if identifiers else []:
        if isinstance(identifier, dict) and identifier.get("system") == system:
            return identifier.get("value")
    return None


def _demo_members(conn: Connection) -> set[str]:
    group = repository.current(conn, EVERYTHING, "Group", DEMO_GROUP_ID)
    if group is None or group.deleted or group.content is None:
        return set()
    return {m.get("entity", {}).get("reference", "").removeprefix("Patient/") for m in group.content.get("member", [])}


def _stripped(content: Any, references: dict[str, str]) -> Any:
    """Content as compared: without id and meta, bundle-internal references resolved."""
    if isinstance(content, dict):
        return {k: (references.get(v, v) if k == "reference" and isinstance(v, str) else _stripped(v, references))
                for k, v in content.items() if k not in ("id", "meta")}
    if isinstance(content, list):
        return [_stripped(v, references) for v in content]
    return content


def _date(content: dict) -> str | None:
    for element in _DATE_ELEMENTS:
        if isinstance(content.get(element), str):
            return content[element][:10]
    return None


def _kind_of(spec: MappingSpec, patient: str, record: str) -> str:
    """The mapping's resource name whose key produced ``record`` (for stored records)."""
    for resource in spec.resources:
        if _key_pattern(resource).fullmatch(f"{patient}/{record}"):
            return resource.name
    return "record"


def _key_pattern(resource: ResourceSpec) -> re.Pattern[str]:
    parts = re.split(r"\{[^}]*\}", resource.key)
    return re.compile("[^/]+".join(re.escape(p) for p in parts))


def _compare(conn: Connection, plan: ImportPlan, rows: list[dict[str, str]], allow_demo: bool) -> None:
    spec, site = plan.spec, plan.site
    patient_system, record_system = PATIENT_SYSTEM.format(site=site), RECORD_SYSTEM.format(site=site)
    listed = sorted({(r.get(spec.patient_key) or "").strip() for r in rows} - {""})
    elsewhere = _patients_elsewhere(conn, site, listed)
    for key, owner in sorted(elsewhere.items()):
        plan.conflicts.append(
            f"patient {key} is stored with site {site}'s identifier but belongs to "
            + (f"site {owner}" if owner else "no site") + "; refusing to merge it into this import")
    stored_patients: dict[str, str] = {}
    records: dict[str, _Stored] = {}
    by_id: dict[tuple[str, str], _Stored] = {}
    for row in _site_rows(conn, site):
        by_id[(row.res_type, row.res_id)] = row
        if row.res_type == "Patient" and (number := _identifier(row.content, patient_system)) is not None:
            stored_patients[number] = row.res_id
        elif (record_key := _identifier(row.content, record_system)) is not None:
            records[record_key] = row
    plan.kept_patients = len(set(stored_patients) - set(listed))
    demo = _demo_members(conn) & set(stored_patients.values())
    if demo and not allow_demo:
        plan.conflicts.append(
            f"site {site} holds {len(demo)} patients of the demo cohort (Group/{DEMO_GROUP_ID}); importing real data "
            "under this site code would mix the two. Use another site code, or import into a database without the demo")

    references: dict[str, str] = {}
    for key, bundle in plan.result.bundles.items():
        for entry in bundle["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] == "Patient":
                if key in stored_patients:
                    references[entry["fullUrl"]] = f"Patient/{stored_patients[key]}"
            else:
                references[entry["fullUrl"]] = f"{resource['resourceType']}/{resource['id']}"

    produced: set[str] = set()
    lines = plan.result.lines
    for key, bundle in plan.result.bundles.items():
        for entry in bundle["entry"]:
            resource = entry["resource"]
            kind = resource["resourceType"]
            record = _identifier(resource, record_system) or ""
            produced.add(record)
            if kind == "Organization":
                continue  # the site itself: shared by every patient, never removed
            stored = (by_id.get(("Patient", stored_patients[key])) if kind == "Patient" and key in stored_patients
                      else by_id.get((kind, resource.get("id", ""))))
            name = "patient" if kind == "Patient" else record.removeprefix(f"{key}/")
            res_id = stored.res_id if stored else resource.get("id")
            change = Change("added", kind, res_id, key, name, _kind_of(spec, key, name) if kind != "Patient" else "patient",
                            _date(resource), lines.get(entry["fullUrl"]))
            if stored is None:
                plan.changes.append(change)
            elif differences := _differences(stored.content, resource, references):
                plan.changes.append(replace(change, action="changed", differences=differences))
            else:
                plan.unchanged += 1
    if plan.mode == "replace":
        accepted = set(plan.result.bundles)
        for record, row in sorted(records.items()):
            patient = record.split("/", 1)[0]
            if patient in accepted and record not in produced:
                name = record.removeprefix(f"{patient}/")
                plan.changes.append(Change("removed", row.res_type, row.res_id, patient, name,
                                           _kind_of(spec, patient, name), _date(row.content), None))


def _differences(stored: dict, resource: dict, references: dict[str, str]) -> tuple[Difference, ...]:
    """The elements whose values differ between the stored record and what the file produces
    (ids, meta and bundle-internal references aside; the profile counted)."""
    old = _leaves(_stripped(stored, {}), "")
    new = _leaves(_stripped(resource, references), "")
    found = [Difference(path, old.get(path), new.get(path)) for path in sorted(old.keys() | new.keys())
             if old.get(path) != new.get(path)]
    old_profile, new_profile = ((content.get("meta") or {}).get("profile") for content in (stored, resource))
    if old_profile != new_profile:
        found.append(Difference("meta.profile", ", ".join(old_profile or []) or None, ", ".join(new_profile or []) or None))
    return tuple(found)


def _leaves(value: Any, path: str) -> dict[str, str]:
    """Every primitive of ``value`` by its path; items of a list by their ``linkId`` where they
    have one (a questionnaire answer stays named when an earlier item is added)."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _leaves(item, f"{path}.{key}" if path else key).items()}
    if isinstance(value, list):
        found: dict[str, str] = {}
        for index, item in enumerate(value):
            label = item.get("linkId") if isinstance(item, dict) else None
            found.update(_leaves(item, f"{path}[{label if isinstance(label, str) else index}]"))
        return found
    return {path: value if isinstance(value, str) else json.dumps(value)}


# --- commit ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Committed:
    provenance: str | None
    added: int
    changed: int
    removed: int


def commit_plan(store: Store, plan: ImportPlan, caller: Access = SERVER, base_url: str = "") -> Committed:
    """Write the plan in one transaction with a Provenance of the import; a plan with conflicts is
    refused, and so is one the stored data no longer matches (preview again)."""
    _require_site(caller, plan.site)
    if plan.conflicts:
        raise Conflict("; ".join(plan.conflicts), "site")
    if not plan.has_changes:
        return Committed(None, 0, 0, 0)
    fresh = _replan(store, plan)
    if fresh.changes != plan.changes:
        raise Conflict("The stored data changed since this preview; preview the import again", "site")
    bundle = _transaction_bundle(plan)
    response = bundles.process(bundles.Context(store, _acting_for(caller, plan), base_url), bundle, "minimal")
    location = response["entry"][-1]["response"].get("location", "")
    return Committed(location.removeprefix(base_url).lstrip("/") or None,
                     plan.count("added"), plan.count("changed"), plan.count("removed"))


def _acting_for(caller: Access, plan: ImportPlan) -> Access:
    """The import writes as the server (its records have the server's deterministic ids, which a
    site client may not choose), under the caller's name and audit, once the caller's own
    permissions for what the plan writes are checked; every record is labelled with the plan's
    site, which the caller owns (``_require_site``)."""
    for kind in sorted({c.resource_type for c in plan.changes} | {"Provenance"}):
        caller.require(kind, "c")
        caller.require(kind, "u")
    if any(c.action == "removed" for c in plan.changes):
        for kind in sorted({c.resource_type for c in plan.changes if c.action == "removed"}):
            caller.require(kind, "d")
    return replace(unrestricted(caller.client_id), audit=caller.audit)


def _replan(store: Store, plan: ImportPlan) -> ImportPlan:
    """The same mapped file compared again with what is stored now (mapping does not depend on
    the store, so it is not redone)."""
    rows = [row for table in plan.tables for row in table.rows]
    fresh = ImportPlan(plan.spec, plan.site, plan.mode, plan.locale, plan.tables, plan.digest, plan.result)
    with store.reading() as conn:
        _compare(conn, fresh, rows, allow_demo=not any("demo cohort" in c for c in plan.conflicts))
    return fresh


def _transaction_bundle(plan: ImportPlan) -> dict:
    entries: dict[str, dict] = {}
    for bundle in plan.result.bundles.values():
        for entry in bundle["entry"]:
            entries.setdefault(entry["fullUrl"], copy.deepcopy(entry))  # processing rewrites entries in place
    deletes = [{"request": {"method": "DELETE", "url": f"{c.resource_type}/{c.res_id}"}}
               for c in plan.changes if c.action == "removed"]
    touched = sorted({c.patient for c in plan.changes})
    targets = [_patient_url(plan, key) for key in touched if key in plan.result.bundles]
    provenance = _provenance(plan, targets, _site_org(entries))
    return {"resourceType": "Bundle", "type": "transaction",
            "entry": [*entries.values(), *deletes,
                      {"resource": provenance, "request": {"method": "PUT", "url": f"Provenance/{provenance['id']}"}}]}


def _patient_url(plan: ImportPlan, key: str) -> str:
    for entry in plan.result.bundles[key]["entry"]:
        if entry["resource"]["resourceType"] == "Patient":
            return entry["fullUrl"]
    raise KeyError(key)


def _site_org(entries: dict[str, dict]) -> str | None:
    for url, entry in entries.items():
        if entry["resource"]["resourceType"] == "Organization":
            return url
    return None


def provenance_id(plan: ImportPlan) -> str:
    """One Provenance per (mapping, site, mode, file content): Provenance has no identifier in R4."""
    return "import-" + hashlib.sha256(f"{plan.spec.name}|{plan.site}|{plan.mode}|{plan.digest}".encode()).hexdigest()[:40]


def _provenance(plan: ImportPlan, targets: list[str], site_org: str | None) -> dict:
    agent_who = {"reference": site_org} if site_org else {"display": f"site {plan.site}"}
    names = ", ".join(t.name for t in plan.tables)
    return {
        "resourceType": "Provenance",
        "id": provenance_id(plan),
        "target": [{"reference": t} for t in targets] or [{"display": "no patient changed; records removed"}],
        "recorded": datetime.now(UTC).isoformat(timespec="seconds"),
        "policy": [f"{MAPPING_BASE}{plan.spec.name}"],
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "UPDATE"}],
                     "text": f"fhirfus import --mapping {plan.spec.name} --site {plan.site} --mode {plan.mode}: "
                             f"{plan.count('added')} added, {plan.count('changed')} changed, {plan.count('removed')} removed"},
        "agent": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                        "code": "author"}]}, "who": agent_who}],
        "entity": [{"role": "source", "what": {"identifier": {"system": "urn:fhirfus:sha256", "value": plan.digest},
                                               "display": names}}],
        "meta": {"security": [{"system": "https://fhirfus.org/fhir/CodeSystem/site", "code": plan.site}]},
    }
