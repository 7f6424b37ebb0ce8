"""De-identification of the analysis rows: policies, pseudonyms, day offsets, ages, k-anonymity.

A policy (``fhirfus/ig/policies/NAME.yaml``) gives a rule to every column the analysis views
produce; a column without a rule refuses the export (fail closed), so adding a view column can
never leak by accident. De-identification happens on the view rows *before* the dataset and the
statistics are computed, so nothing downstream ever sees identifiable data.

Pseudonyms are random codes (HIPAA 164.514(c): not derived from any identifier), drawn once per
patient and pseudonym namespace and kept in the ``deid_crosswalk`` table. The namespace is an
HMAC of ``FHIRFUS_DEID_KEY``: the same key finds the same pseudonyms again, another key starts an
unrelated set, and the key itself is stored nowhere.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from fhirfus.db.tables import deid_crosswalk
from fhirfus.errors import FhirError, InvalidRequest
from fhirfus.ig import folder
from fhirfus.store.repository import Store

POLICY_DIR = folder("policies")
DEFAULT_POLICY = "safe-harbor"
KEY_VARIABLE = "FHIRFUS_DEID_KEY"
MIN_KEY_LENGTH = 16
SUPPRESSED = "*"
#: No 0/O, 1/I/L: pseudonyms get read aloud and typed.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
RULES = frozenset({"pseudonym", "opaque", "day-offset", "age-band", "keep", "map", "zip3", "drop"})
TEMPORAL = frozenset({"date", "dateTime", "instant"})
TEXT = frozenset({"string", "code", "id", "uri", "markdown", None})
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_DATE_RE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")
_ZIP_RE = re.compile(r"^(\d{3})\d{2}(?:-?\d{4})?$")


class DeidentificationUnavailable(FhirError):
    """The server has no ``FHIRFUS_DEID_KEY``: it cannot pseudonymise, so it exports nothing (503)."""

    status = 503
    issue_code = "not-supported"


class PolicyError(FhirError):
    """The policy cannot be applied to the views as they are (a column without a rule…) (422)."""

    status = 422
    issue_code = "business-rule"


# --- the key ---------------------------------------------------------------------------------


def checked_key(key: str | None) -> str:
    """The de-identification key (``Settings.deid_key``), or a clear refusal."""
    if not key or not key.strip():
        raise DeidentificationUnavailable(
            f"De-identified exports are disabled: {KEY_VARIABLE} is not set. Set it to a secret of at least "
            f"{MIN_KEY_LENGTH} characters; it selects the pseudonym namespace, so keep it to get the same "
            "pseudonyms again", KEY_VARIABLE)
    if len(key) < MIN_KEY_LENGTH:
        raise DeidentificationUnavailable(
            f"{KEY_VARIABLE} is too short: use at least {MIN_KEY_LENGTH} characters", KEY_VARIABLE)
    return key


def namespace_for(key: str) -> str:
    """The pseudonym namespace of a key (an HMAC, so the key cannot be read back from the table)."""
    return hmac.new(key.encode(), b"fhirfus/deid/pseudonym-namespace/v1", hashlib.sha256).hexdigest()[:40]


# --- policies --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """What happens to one view column."""

    kind: str
    pattern: re.Pattern[str] | None = None
    mapping: Mapping[str, str] = field(default_factory=dict)
    default: str | None = None


@dataclass(frozen=True)
class DateReference:
    view: str
    column: str


@dataclass(frozen=True)
class Policy:
    name: str
    title: str
    sha256: str
    source: str
    prefix: str
    length: int
    reference: DateReference
    fallback: DateReference | None
    band_years: int
    top_code: int
    restricted_zip3: frozenset[str]
    quasi_identifiers: tuple[str, ...]
    min_k: int
    suppress_order: tuple[str, ...]
    never_read: frozenset[str]
    restricted_read: Mapping[str, frozenset[str]]
    columns: Mapping[str, Mapping[str, Rule]]

    def rule(self, view: str, column: str) -> Rule:
        return self.columns[view][column]


def available_policies() -> list[str]:
    return sorted(p.stem for p in POLICY_DIR.glob("*.yaml"))


def load_policy(name: str | None, directory: Path = POLICY_DIR) -> Policy:
    """The policy ``name`` (default ``safe-harbor``); InvalidRequest (400) for an unknown name."""
    name = name or DEFAULT_POLICY
    path = directory / f"{name}.yaml"
    if not _NAME_RE.match(name) or not path.is_file():
        raise InvalidRequest(
            f"Unknown de-identification policy '{name}'; available: {', '.join(available_policies())}", "policy")
    return parse_policy(path.read_bytes(), f"policies/{path.name}")


def parse_policy(data: bytes, source: str) -> Policy:
    """Parse and check a policy document; its hash is over the exact bytes (verifiable with sha256sum)."""
    try:
        raw = yaml.safe_load(data)
        return _build_policy(raw, hashlib.sha256(data).hexdigest(), source)
    except (yaml.YAMLError, KeyError, TypeError, ValueError, re.error) as exc:
        raise PolicyError(f"{source}: invalid policy ({type(exc).__name__}: {exc})", "policy") from exc


def _reference(raw: Any) -> DateReference:
    return DateReference(str(raw["view"]), str(raw["column"]))


def _build_policy(raw: Mapping[str, Any], sha256: str, source: str) -> Policy:
    columns: dict[str, dict[str, Rule]] = {}
    for view, rules in raw["columns"].items():
        columns[view] = {column: _rule(spec, f"{source}: columns.{view}.{column}") for column, spec in rules.items()}
    dates = raw["dates"]
    k = raw.get("k_anonymity") or {}
    return Policy(
        name=str(raw["name"]),
        title=str(raw.get("title", raw["name"])),
        sha256=sha256,
        source=source,
        prefix=str(raw["pseudonym"].get("prefix", "")),
        length=int(raw["pseudonym"].get("length", 10)),
        reference=_reference(dates["reference"]),
        fallback=_reference(dates["fallback"]) if dates.get("fallback") else None,
        band_years=max(1, int(raw["age"]["band_years"])),
        top_code=int(raw["age"].get("top_code", 90)),
        restricted_zip3=frozenset(str(z) for z in raw.get("geography", {}).get("restricted_zip3", [])),
        quasi_identifiers=tuple(raw.get("quasi_identifiers", [])),
        min_k=max(1, int(k.get("min_k") or 1)),
        suppress_order=tuple(k.get("suppress_order", [])),
        never_read=frozenset(raw.get("never_read", [])),
        restricted_read={e: frozenset(r) for e, r in (raw.get("restricted_read") or {}).items()},
        columns=columns,
    )


def _rule(spec: Any, where: str) -> Rule:
    if isinstance(spec, str):
        spec = {"rule": spec}
    kind = spec.get("rule")
    if kind not in RULES:
        raise ValueError(f"{where}: unknown rule {kind!r} (one of {', '.join(sorted(RULES))})")
    pattern = re.compile(spec["pattern"]) if spec.get("pattern") else None
    mapping = {str(k): str(v) for k, v in (spec.get("map") or {}).items()}
    if kind == "map" and not mapping:
        raise ValueError(f"{where}: rule map needs a 'map'")
    return Rule(kind, pattern, mapping, None if spec.get("default") is None else str(spec["default"]))


_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'")
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def path_elements(path: str) -> set[str]:
    """Element names a FHIRPath mentions (quoted strings removed), for the static never-read check."""
    return set(_TOKEN.findall(_QUOTED.sub("''", path)))


@dataclass(frozen=True)
class ViewColumn:
    """What the policy check needs to know about one column of one view."""

    view: str
    name: str
    type: str | None
    paths: tuple[str, ...]
    allowed: frozenset[str] | None


def check_policy(policy: Policy, columns: Iterable[ViewColumn]) -> None:
    """Refuse a policy that does not cover the views exactly and safely; every problem is listed."""
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    for column in columns:
        seen.add((column.view, column.name))
        where = f"{column.view}.{column.name}"
        rule = policy.columns.get(column.view, {}).get(column.name)
        if rule is None:
            problems.append(f"{where} has no rule (add one, e.g. 'drop')")
            continue
        elements = set().union(*(path_elements(p) for p in column.paths))
        if rule.kind != "drop" and (forbidden := elements & policy.never_read):
            problems.append(f"{where} reads {', '.join(sorted(forbidden))}, which never leaves")
        for element in elements & set(policy.restricted_read):
            if rule.kind not in policy.restricted_read[element]:
                problems.append(f"{where} reads {element} and may only be {'/'.join(sorted(policy.restricted_read[element]))}")
        if rule.kind in ("keep", "map") and column.type in TEMPORAL:
            problems.append(f"{where} is a date: use day-offset, age-band or drop")
        if rule.kind in ("day-offset", "age-band") and column.type not in TEMPORAL:
            problems.append(f"{where} is not a date: {rule.kind} does not apply")
        if rule.kind == "keep" and column.type in TEXT and rule.pattern is None and column.allowed is None:
            problems.append(f"{where} is text without a closed vocabulary: give the rule a pattern or the "
                            "view column a fhirfus-codesystem/fhirfus-allowed tag")
    for view, rules in policy.columns.items():
        problems += [f"{view}.{name} has a rule but no such view column" for name in rules if (view, name) not in seen]
    for ref in filter(None, (policy.reference, policy.fallback)):
        if (ref.view, ref.column) not in seen or policy.rule(ref.view, ref.column).kind != "day-offset":
            problems.append(f"date reference {ref.view}.{ref.column} must be a view column with rule day-offset")
    if problems:
        raise PolicyError(f"Policy '{policy.name}' ({policy.source}) cannot be applied: " + "; ".join(problems),
                          "policy")


# --- transformations -------------------------------------------------------------------------


def parse_day(value: Any) -> date | None:
    """The calendar day of a FHIR date/dateTime as recorded (None for partial or missing dates)."""
    if not isinstance(value, str):
        return None
    match = _DATE_RE.match(value)
    if not match or match.group(3) is None:
        return None
    try:
        return date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    except ValueError:
        return None


def birth_day(value: Any) -> date | None:
    """A birth date; partial ones take the middle of their span (mid-year, mid-month)."""
    if not isinstance(value, str):
        return None
    match = _DATE_RE.match(value)
    if not match:
        return None
    year, month, day = match.groups()
    try:
        return date(int(year), int(month or 7), int(day or (15 if month else 1)))
    except ValueError:
        return None


def age_years(born: date, on: date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def age_band(age: int | None, band_years: int, top_code: int) -> str | None:
    """``40-44`` style bands; ``90+`` from the top code (ages over 89 are never released)."""
    if age is None or age < 0:
        return None
    if age >= top_code:
        return f"{top_code}+"
    low = (age // band_years) * band_years
    high = min(low + band_years - 1, top_code - 1)
    return str(low) if high == low else f"{low}-{high}"


def zip3(value: Any, restricted: frozenset[str]) -> str | None:
    """The first three digits of a US ZIP code; ``000`` for the restricted (sparse) prefixes."""
    if not isinstance(value, str):
        return None
    match = _ZIP_RE.match(value.strip())
    if not match:
        return None
    prefix = match.group(1)
    return "000" if prefix in restricted else prefix


def keep_value(value: Any, rule: Rule, allowed: frozenset[str] | None) -> tuple[Any, bool]:
    """(released value, whether something was blanked) for ``keep`` and ``map``."""
    if value is None:
        return None, False
    if rule.kind == "map":
        mapped = rule.mapping.get(str(value), rule.default)
        return mapped, mapped is None
    if isinstance(value, bool | int | float):
        return value, False
    text = str(value)
    if allowed is not None and text not in allowed:
        return None, True
    if rule.pattern is not None and not rule.pattern.fullmatch(text):
        return None, True
    return text, False


# --- pseudonyms ------------------------------------------------------------------------------


def new_pseudonym(policy: Policy) -> str:
    return policy.prefix + "".join(secrets.choice(ALPHABET) for _ in range(policy.length))


def pseudonyms(store: Store, namespace: str, patient_ids: Sequence[str], policy: Policy,
               chunk: int = 1000) -> dict[str, str]:
    """patient id → pseudonym in ``namespace``; new patients get fresh random codes (stored first).

    Concurrent exports may race for the same patient: the insert ignores conflicts and the
    winner's code is read back, so a patient never gets two pseudonyms in one namespace.
    """
    found: dict[str, str] = {}
    table = deid_crosswalk
    for start in range(0, len(patient_ids), chunk):
        part = list(patient_ids[start:start + chunk])
        with store.reading() as conn:
            rows = conn.execute(select(table.c.patient_id, table.c.pseudonym)
                                .where(table.c.namespace == namespace, table.c.patient_id.in_(part))).all()
        found.update((r.patient_id, r.pseudonym) for r in rows)
    for _attempt in range(5):
        missing = [pid for pid in patient_ids if pid not in found]
        if not missing:
            return found
        now = datetime.now(UTC)
        with store.writing() as conn:
            dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
            for start in range(0, len(missing), chunk):
                part = missing[start:start + chunk]
                fresh = [{"namespace": namespace, "patient_id": pid, "pseudonym": new_pseudonym(policy),
                          "created": now} for pid in part]
                conn.execute(dialect_insert(table).on_conflict_do_nothing(), fresh)
            for start in range(0, len(missing), chunk):
                part = missing[start:start + chunk]
                got = conn.execute(select(table.c.patient_id, table.c.pseudonym)
                                   .where(table.c.namespace == namespace, table.c.patient_id.in_(part))).all()
                found.update((r.patient_id, r.pseudonym) for r in got)
    raise PolicyError("Could not allocate unique pseudonyms; increase pseudonym.length in the policy", "policy")


# --- k-anonymity -----------------------------------------------------------------------------


@dataclass
class KReport:
    """Equivalence classes over the released quasi-identifiers, before and after suppression."""

    quasi_identifiers: list[str]
    min_k: int
    k_before: int
    k_after: int
    classes_before: int
    classes_after: int
    records_below_k: int
    suppressed_cells: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "quasi_identifiers": self.quasi_identifiers, "min_k": self.min_k,
            "k": self.k_after, "k_before_suppression": self.k_before,
            "classes": self.classes_after, "classes_before_suppression": self.classes_before,
            "records_below_min_k_before_suppression": self.records_below_k,
            "suppressed_cells": self.suppressed_cells,
        }


def _classes(records: Sequence[Mapping[str, Any]], qis: Sequence[str]) -> Counter:
    return Counter(tuple(r.get(q) for q in qis) for r in records)


def k_anonymize(records: list[dict[str, Any]], policy: Policy) -> KReport:
    """Report the smallest equivalence class and, for ``min_k`` > 1, suppress values until it holds.

    Local suppression in the policy's order: the records of classes below k lose that
    quasi-identifier (``*``), the classes are recounted, and so on; if the fully suppressed
    records are still fewer than k, the smallest remaining classes join them. Records are never
    dropped (the statistics keep every patient). Quasi-identifiers the policy drops are not
    released and therefore not counted.
    """
    qis = [q for q in policy.quasi_identifiers if any(q in r for r in records)]
    before = _classes(records, qis)
    k_before = min(before.values()) if before else 0
    below = sum(n for n in before.values() if n < policy.min_k)
    suppressed = dict.fromkeys(qis, 0)
    if policy.min_k > 1 and records and qis:
        for qi in [q for q in policy.suppress_order if q in qis] + [q for q in qis if q not in policy.suppress_order]:
            counts = _classes(records, qis)
            for record in records:
                if counts[tuple(record.get(q) for q in qis)] < policy.min_k and record.get(qi) != SUPPRESSED:
                    record[qi] = SUPPRESSED
                    suppressed[qi] += 1
        everything = tuple(SUPPRESSED for _ in qis)
        counts = _classes(records, qis)
        while 0 < counts.get(everything, 0) < policy.min_k and len(counts) > 1:
            smallest = min((c for c in counts if c != everything), key=lambda c: counts[c])
            for record in records:
                if tuple(record.get(q) for q in qis) == smallest:
                    for qi in qis:
                        if record.get(qi) != SUPPRESSED:
                            record[qi] = SUPPRESSED
                            suppressed[qi] += 1
            counts = _classes(records, qis)
    after = _classes(records, qis)
    return KReport(qis, policy.min_k, k_before, min(after.values()) if after else 0, len(before), len(after),
                   below, suppressed)
