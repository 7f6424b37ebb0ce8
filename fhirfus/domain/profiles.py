"""Conformance to the fhirfus profiles (``fhirfus/ig/profiles``): a compact differential validator.

Why: a write that claims a fhirfus profile in ``meta.profile`` must honour it, and every resource
the inbound mappings produce claims one. The profiles are differentials over R4, whose base rules
(structure, datatypes, required base bindings) ``fhirfus.fhir.validation`` already checks; what is
left is the handful of constraint kinds the differentials use, so a small walker over the JSON
does, with no snapshot generation.

Checked, per instance of each differential element (paths may be nested, sliced, or inside slices):

- ``min`` / ``max``, counted per instance of the parent element (``Procedure.bodySite.coding`` min 1
  means every bodySite has a coding; nothing is required under an absent parent);
- slicing: membership by ``value`` / ``pattern`` discriminators on a path (``system``, extension
  ``url``) and by ``type`` on ``$this`` (choice slices such as ``value[x]:valueQuantity``);
  extensions are sliced by ``url`` when no slicing is declared; ``closed`` rejects unsliced items;
- choice types: the ``value[x]`` key used must be one of the element's ``type`` codes;
- ``fixed[x]`` (exactly equal) and ``pattern[x]`` (the instance contains the pattern, so a
  ``patternCodeableConcept`` needs a coding with its system and code), on every repetition;
- ``binding`` to a fhirfus ValueSet, enumerated from ``fhirfus/ig/terminology``: a code from one of
  the ValueSet's systems must be in it (required and extensible); ``required`` also needs one
  coding from the ValueSet (``extensible``: a warning when there is none);
- extension slices typed with a fhirfus extension profile: each such extension against it;
- ``constraint`` invariants, evaluated with fhirpathpy: ``false`` is an issue of the constraint's
  severity; an empty result (its input is absent) is left to the cardinality rules.

Not checked: ``mustSupport`` (an obligation on systems, not instances); reference targets
(``targetProfile`` would need reads); the type of non-choice elements (the base validator's job);
bindings to ValueSets outside fhirfus (required base bindings are ``fhirfus.fhir.bindings``' job),
or ValueSets defined by filters; ``exists`` / ``profile`` discriminators, re-slicing and paths
through undefined slices (a profile using them fails to load, so a test catches it).

The R4 core profiles (``http://hl7.org/fhir/StructureDefinition/``: the vital signs family, …,
generated into ``fhirfus/fhir/data/core_profiles.json``) are applied the same way, each with the
core profiles it derives from (``bp`` with ``vitalsigns``); the few whose slicing this validator
cannot read are reported as not checked (a warning). Other profiles (US Core, …) are not held
here: a claim of one is ignored (naming one in ``$validate?profile=`` is an error, as it cannot be
checked). An unknown fhirfus canonical, an unknown version
(``|version``), or a profile of another resource type is an error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import cache
from typing import Any

from fhirfus.errors import Issue
from fhirfus.fhir.core_profiles import CORE, core_profile_definitions
from fhirfus.fhir.elements import element_model
from fhirfus.fhirpath.compiler import ExpressionCompiler, Unsupported
from fhirfus.fhirpath.engine import compile_expression, element_node, evaluate
from fhirfus.ig import resources_in
from fhirfus.terminology.expansion import ValueSetError, expand

BASE = "https://fhirfus.org/fhir/StructureDefinition/"
VALUESET_BASE = "https://fhirfus.org/fhir/ValueSet/"
EXTENSION_NAMES = ("extension", "modifierExtension")


# --------------------------------------------------------------------------- definitions


@dataclass(frozen=True, slots=True)
class ValueSetCodes:
    """The enumerated codes of one ValueSet, by system."""

    url: str
    by_system: Mapping[str, frozenset[str]]

    def contains(self, system: Any, code: Any) -> bool:
        return isinstance(system, str) and code in self.by_system.get(system, ())


@dataclass(frozen=True, slots=True)
class Discriminator:
    type: str  # "value", "pattern" or "type"
    path: str


@dataclass(frozen=True, slots=True)
class Slicing:
    discriminators: tuple[Discriminator, ...]
    closed: bool


@dataclass(frozen=True, slots=True)
class Invariant:
    key: str
    severity: str
    human: str
    expression: str


@dataclass(frozen=True, slots=True)
class ElementRule:
    """What the validator needs of one differential element."""

    id: str
    parent: str | None  # id of the enclosing element; None for the root
    name: str  # JSON name within the parent; "value[x]" for a choice
    slice: str | None
    min: int | None
    max: int | None  # None: unbounded or not constrained
    fixed: tuple[str, Any] | None  # ("fixedUri", value)
    pattern: tuple[str, Any] | None
    binding: tuple[str, str] | None  # (strength, ValueSet canonical)
    types: tuple[str, ...]
    type_profiles: tuple[str, ...]
    slicing: Slicing | None
    invariants: tuple[Invariant, ...]
    discriminator_values: tuple[Any, ...] = ()  # for a slice: expected value per discriminator

    def choice_keys(self) -> frozenset[str]:
        """JSON keys a choice element may use (``valueQuantity`` for ``value[x]`` of Quantity)."""
        base = self.name.removesuffix("[x]")
        return frozenset(base + t[:1].upper() + t[1:] for t in self.types)


@dataclass(frozen=True)
class Profile:
    url: str
    version: str
    name: str
    kind: str
    type: str
    elements: Mapping[str, ElementRule]  # by id, in differential order

    def slices(self, sliced_id: str) -> list[ElementRule]:
        return [e for e in self.elements.values() if e.slice and f"{e.parent}.{e.name}" == sliced_id]

    def slicing(self, sliced_id: str) -> Slicing:
        rule = self.elements.get(sliced_id)
        if rule is not None and rule.slicing is not None:
            return rule.slicing
        if sliced_id.rsplit(".", 1)[-1] in EXTENSION_NAMES:
            return Slicing((Discriminator("value", "url"),), closed=False)
        raise ValueError(f"{self.url}: '{sliced_id}' has slices but no slicing")


def _split_id(element_id: str) -> tuple[str | None, str, str | None]:
    """``Observation.value[x]:valueQuantity`` → (``Observation``, ``value[x]``, ``valueQuantity``)."""
    if "." not in element_id:
        return None, element_id, None
    parent, last = element_id.rsplit(".", 1)
    name, _, slice_name = last.partition(":")
    return parent, name, slice_name or None


def _prefixed(element: Mapping[str, Any], prefix: str) -> tuple[str, Any] | None:
    return next(((k, v) for k, v in element.items() if k.startswith(prefix) and k != prefix), None)


def _slicing(raw: Mapping[str, Any] | None) -> Slicing | None:
    if raw is None:
        return None
    discriminators = tuple(Discriminator(d["type"], d["path"]) for d in raw.get("discriminator", []))
    for d in discriminators:
        if d.type not in ("value", "pattern", "type") or (d.type == "type" and d.path != "$this"):
            raise ValueError(f"unsupported discriminator {d.type} on '{d.path}'")
    return Slicing(discriminators, raw.get("rules") == "closed")


def _element(raw: Mapping[str, Any]) -> ElementRule:
    element_id = raw.get("id")
    if not isinstance(element_id, str):
        raise TypeError(f"differential element without id: {raw.get('path')}")
    if "/" in element_id.rsplit(".", 1)[-1]:
        raise ValueError(f"re-slicing is not supported: {element_id}")
    parent, name, slice_name = _split_id(element_id)
    binding = raw.get("binding")
    maximum = raw.get("max")
    return ElementRule(
        id=element_id,
        parent=parent,
        name=name,
        slice=slice_name,
        min=raw.get("min"),
        max=None if maximum in (None, "*") else int(maximum),
        fixed=_prefixed(raw, "fixed"),
        pattern=_prefixed(raw, "pattern"),
        binding=(binding["strength"], binding["valueSet"]) if binding and "valueSet" in binding else None,
        types=tuple(t["code"] for t in raw.get("type", [])),
        type_profiles=tuple(p for t in raw.get("type", []) for p in t.get("profile", [])),
        slicing=_slicing(raw.get("slicing")),
        invariants=tuple(
            Invariant(c["key"], c.get("severity", "error"), c.get("human", c["key"]), c["expression"])
            for c in raw.get("constraint", [])
            if c.get("expression")
        ),
    )


def _values_at(value: Any, path: str) -> list[Any]:
    """Values at a dotted path inside JSON (lists flattened); ``$this`` is the value itself."""
    found = [value]
    if path == "$this":
        return found
    for part in path.split("."):
        nxt: list[Any] = []
        for item in found:
            child = item.get(part) if isinstance(item, Mapping) else None
            nxt += child if isinstance(child, list) else [] if child is None else [child]
        found = nxt
    return found


def _through_slices(elements: Mapping[str, ElementRule], slice_id: str, path: str) -> ElementRule | None:
    """The fixed or pattern element at ``path`` under a slice, reached through the slices inside it
    (R4's ``bp``: ``component:SystolicBP.code.coding:SBPCode.code`` for ``code.coding.code``)."""
    for element_id, element in elements.items():
        if element_id.startswith(f"{slice_id}.") and (element.fixed or element.pattern):
            unsliced = ".".join(part.split(":")[0] for part in element_id[len(slice_id) + 1:].split("."))
            if unsliced == path:
                return element
    return None


def _discriminator_value(elements: Mapping[str, ElementRule], slice_rule: ElementRule, d: Discriminator) -> Any:
    """What a slice's members carry at the discriminator path, read from the slice's definition."""
    if d.type == "type":
        return slice_rule.choice_keys() if slice_rule.types else frozenset({slice_rule.slice})
    child = elements.get(f"{slice_rule.id}.{d.path}") or _through_slices(elements, slice_rule.id, d.path)
    if child is not None and (child.fixed or child.pattern):
        return (child.fixed or child.pattern)[1]  # type: ignore[index]
    own = slice_rule.fixed or slice_rule.pattern
    if own is not None:
        values = _values_at(own[1], d.path)
        if values:
            return values[0]
    if d.path == "url" and slice_rule.type_profiles:
        return slice_rule.type_profiles[0]
    raise ValueError(f"slice '{slice_rule.id}' does not define its discriminator '{d.path}'")


def _require_slices(rules: Mapping[str, ElementRule], element_id: str) -> None:
    """A path through a slice (``a.b:s.c``) needs that slice defined, or its members are unknown."""
    parts = element_id.split(".")
    for end in range(1, len(parts)):
        prefix = ".".join(parts[:end])
        if ":" in parts[end - 1] and prefix not in rules:
            raise ValueError(f"'{element_id}' goes through the undefined slice '{prefix}'")


def parse_profile(resource: Mapping[str, Any]) -> Profile:
    """Index a StructureDefinition's differential; raises ``ValueError`` on what this validator cannot check.

    Each slice gets the value its members carry at every discriminator, so membership is a lookup.
    """
    url = resource["url"]
    try:
        rules = {e.id: e for e in (_element(raw) for raw in resource["differential"]["element"])}
        for element_id in rules:
            _require_slices(rules, element_id)
        header = (url, str(resource.get("version", "")), resource.get("name", url), resource["kind"], resource["type"])
        draft = Profile(*header, rules)
        for rule in [r for r in rules.values() if r.slice]:
            slicing = draft.slicing(f"{rule.parent}.{rule.name}")
            values = tuple(_discriminator_value(rules, rule, d) for d in slicing.discriminators)
            rules[rule.id] = replace(rule, discriminator_values=values)
        return Profile(*header, dict(rules))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{url}: {exc}") from exc


@cache
def profiles() -> dict[str, Profile]:
    """Every fhirfus StructureDefinition in ``fhirfus/ig/profiles``, by canonical URL."""
    return {
        r["url"]: parse_profile(r)
        for r in resources_in("profiles")
        if r.get("resourceType") == "StructureDefinition" and str(r.get("url", "")).startswith(BASE)
    }


@cache
def core_profiles() -> dict[str, Profile | None]:
    """The R4 core profiles by canonical URL (None: one this validator cannot check)."""
    parsed: dict[str, Profile | None] = {}
    for url, definition in core_profile_definitions().items():
        try:
            parsed[url] = parse_profile(definition)
        except ValueError:
            parsed[url] = None
    return parsed


def _core_chain(url: str) -> list[Profile | None]:
    """The profile and the core profiles it derives from (``bp`` → ``vitalsigns``)."""
    chain: list[Profile | None] = []
    while url in core_profiles() and len(chain) < 8:
        chain.append(core_profiles()[url])
        url = str(core_profile_definitions()[url].get("baseDefinition", ""))
    return chain


VITAL_SIGNS = f"{CORE}vitalsigns"
LOINC = "http://loinc.org"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"


@cache
def _vital_sign_profiles() -> dict[str, str]:
    """LOINC code → the R4 vital signs profile that fixes it (``8867-4`` → ``heartrate``)."""
    found = {}
    for url, definition in core_profile_definitions().items():
        if definition.get("baseDefinition") != VITAL_SIGNS:
            continue
        for element in definition["differential"]["element"]:
            if element["id"].startswith("Observation.code.coding:") and element["id"].endswith(".code") \
                    and "fixedCode" in element:
                found[element["fixedCode"]] = url
    return found


def implied_profiles(resource: Mapping[str, Any]) -> list[str]:
    """The R4 profiles an Observation must meet without claiming them (observation-vitalsigns.html):
    a vital-signs category brings the vital signs profile, a vital sign's LOINC code its own."""
    if resource.get("resourceType") != "Observation":
        return []
    implied = []
    if any(c.get("system") == CATEGORY_SYSTEM and c.get("code") == "vital-signs"
           for concept in _list(resource.get("category")) for c in _codings(concept)):
        implied.append(VITAL_SIGNS)
    implied += [_vital_sign_profiles()[c["code"]] for c in _codings(resource.get("code"))
                if c.get("system") == LOINC and c.get("code") in _vital_sign_profiles()]
    return implied


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _codings(concept: Any) -> list[Mapping[str, Any]]:
    return [c for c in _list(concept.get("coding")) if isinstance(c, Mapping)] if isinstance(concept, Mapping) else []


def _enumerated(url: str) -> ValueSetCodes | None:
    """The codes of a ValueSet by system, from the one terminology layer (None: not enumerable)."""
    try:
        systems = expand(url).systems
    except ValueSetError:
        return None
    if any(codes is None for codes in systems.values()):
        return None
    return ValueSetCodes(url, {system: codes or frozenset() for system, codes in systems.items()})


@cache
def valuesets() -> dict[str, ValueSetCodes | None]:
    """Every fhirfus ValueSet in ``fhirfus/ig/terminology``, enumerated (None: not enumerable)."""
    return {r["url"]: _enumerated(r["url"]) for r in resources_in("terminology") if r.get("resourceType") == "ValueSet"}


def _choice_type(key: str, base: str) -> str:
    """The data type a choice element's JSON key carries: ``dateTime`` for ``effectiveDateTime``,
    ``Period`` for ``effectivePeriod`` (complex types are the model's tables; primitives are not)."""
    suffix = key[len(base):]
    return suffix if suffix in element_model().tables else suffix[:1].lower() + suffix[1:]


@cache
def _invariant(expression: str, path: str, of_type: bool = False) -> Callable[[Any], list]:
    """An invariant's expression compiled once, evaluated on an instance of element ``path``, or
    with ``of_type`` on an instance of a choice element whose data type ``path`` names: so
    ``($this as dateTime)`` on ``effective[x]`` sees a dateTime, not an untyped string.

    To closures (``fhirpath.compiler``) when they cover it, as the core invariants are: the engine
    builds a context and walks a syntax tree per instance. The engine still answers what the
    closures cannot decide, and expressions reading ``%`` variables or a choice element."""
    compiled = compile_expression(expression)

    def on_engine(value: Any) -> list:
        typed = of_type or ("." in path and isinstance(value, Mapping))
        return evaluate(compiled, element_node(value, path) if typed else value)

    if "%" in expression or "[" in path or of_type:
        return on_engine
    try:
        closures = ExpressionCompiler(path.split(".")[0]).compile(expression, path)
    except Unsupported:
        return on_engine

    def run(value: Any) -> list:
        try:
            return closures([value], value)  # the root is only read through %resource: not here
        except Exception:  # Undecided, or data the closures do not expect: the engine's answer stands
            return on_engine(value)

    return run


# --------------------------------------------------------------------------- walking


@dataclass(frozen=True, slots=True)
class Node:
    """One instance of an element: its JSON value, its expression, and its JSON key."""

    value: Any
    expr: str
    key: str


def _children(node: Node, name: str) -> list[Node]:
    """The values of ``name`` in ``node`` (every ``value…`` key for ``value[x]``), lists expanded."""
    if not isinstance(node.value, Mapping):
        return []
    if name.endswith("[x]"):
        base = name[:-3]
        keys = [k for k in node.value if k.startswith(base) and k[len(base):][:1].isupper()]
    else:
        keys = [name] if name in node.value else []
    out = []
    for key in keys:
        value = node.value[key]
        if isinstance(value, list):
            out += [Node(item, f"{node.expr}.{key}[{i}]", key) for i, item in enumerate(value)]
        else:
            out.append(Node(value, f"{node.expr}.{key}", key))
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _same(value: Any, expected: Any) -> bool:
    if _number(value) and _number(expected):
        return Decimal(str(value)) == Decimal(str(expected))
    return type(value) is type(expected) and value == expected


def equals(value: Any, fixed: Any) -> bool:
    """``fixed[x]``: exactly the fixed value (no extra elements)."""
    if isinstance(fixed, Mapping):
        return (isinstance(value, Mapping) and value.keys() == fixed.keys()
                and all(equals(value[k], fixed[k]) for k in fixed))
    if isinstance(fixed, list):
        return isinstance(value, list) and len(value) == len(fixed) and all(map(equals, value, fixed))
    return _same(value, fixed)


def contains(value: Any, pattern: Any) -> bool:
    """``pattern[x]``: every element of the pattern is present; each pattern list item matches some item."""
    if isinstance(pattern, Mapping):
        return isinstance(value, Mapping) and all(contains(value.get(k), p) for k, p in pattern.items())
    if isinstance(pattern, list):
        return isinstance(value, list) and all(any(contains(v, p) for v in value) for p in pattern)
    return _same(value, pattern)


def _show(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"))


class _Check:
    """One resource (or extension) against one profile; instances cached per element id."""

    def __init__(self, profile: Profile, root: Any, root_expr: str, depth: int = 0) -> None:
        self.profile, self.depth = profile, depth
        self.root = Node(root, root_expr, root_expr)
        self.cache: dict[str, list[Node]] = {}
        self.issues: list[Issue] = []

    # --- selection

    def select(self, parent: Node, rule_id: str) -> list[Node]:
        """The instances of element ``rule_id`` under one instance of its parent."""
        _, name, slice_name = _split_id(rule_id)
        children = _children(parent, name)
        if slice_name is None:
            return children
        rule = self.profile.elements[rule_id]  # defined: parse_profile checks paths through slices
        return [c for c in children if self.member(rule, c)]

    def nodes(self, element_id: str) -> list[Node]:
        """Every instance of an element in the resource."""
        if element_id not in self.cache:
            parent_id, _, _ = _split_id(element_id)
            if parent_id is None:
                self.cache[element_id] = [self.root]
            else:
                self.cache[element_id] = [n for p in self.nodes(parent_id) for n in self.select(p, element_id)]
        return self.cache[element_id]

    def member(self, slice_rule: ElementRule, node: Node) -> bool:
        slicing = self.profile.slicing(f"{slice_rule.parent}.{slice_rule.name}")
        for d, expected in zip(slicing.discriminators, slice_rule.discriminator_values, strict=True):
            if d.type == "type":
                if node.key not in expected:
                    return False
            elif not any(contains(v, expected) for v in _values_at(node.value, d.path)):
                return False
        return True

    # --- reporting

    def issue(self, rule: ElementRule, message: str, code: str, expr: str, severity: str = "error") -> None:
        where = f"{rule.id}" if rule.slice is None else f"{rule.id} (slice '{rule.slice}')"
        self.issues.append(Issue(f"{where}: {message} (profile {self.profile.url})", code, severity, (expr,)))

    # --- constraint kinds

    def cardinality(self, rule: ElementRule) -> None:
        if rule.parent is None or (rule.min in (None, 0) and rule.max is None):
            return
        for parent in self.nodes(rule.parent):
            count = len(self.select(parent, rule.id))
            expr = f"{parent.expr}.{rule.name}"
            if rule.min and count < rule.min:
                self.issue(rule, f"at least {rule.min} required, found {count}", "required", expr)
            if rule.max is not None and count > rule.max:
                self.issue(rule, f"at most {rule.max} allowed, found {count}", "structure", expr)

    def closed_slicing(self, rule: ElementRule) -> None:
        if rule.slicing is None or not rule.slicing.closed or rule.parent is None:
            return
        slices = self.profile.slices(rule.id)
        for parent in self.nodes(rule.parent):
            for child in _children(parent, rule.name):
                if not any(self.member(s, child) for s in slices):
                    allowed = ", ".join(s.slice or "" for s in slices)
                    self.issue(rule, f"not allowed by closed slicing (slices: {allowed})", "structure", child.expr)

    def choice_type(self, rule: ElementRule) -> None:
        if not rule.name.endswith("[x]") or not rule.types:
            return
        allowed = rule.choice_keys()
        for node in self.nodes(rule.id):
            if node.key not in allowed:
                use = " or ".join(sorted(allowed))
                self.issue(rule, f"{node.key} is not allowed; use {use}", "structure", node.expr)

    def value(self, rule: ElementRule) -> None:
        kinds = ((rule.fixed, equals, "must be exactly"), (rule.pattern, contains, "must match"))
        for constraint, check, verb in kinds:
            if constraint is None:
                continue
            key, expected = constraint
            for node in self.nodes(rule.id):
                if not check(node.value, expected):
                    self.issue(rule, f"{verb} {key} {_show(expected)}, found {_show(node.value)}", "value", node.expr)

    def binding(self, rule: ElementRule) -> None:
        if rule.binding is None or not rule.binding[1].startswith(VALUESET_BASE):
            return
        strength, canonical = rule.binding
        valueset = valuesets().get(canonical.partition("|")[0])
        if valueset is None or strength not in ("required", "extensible"):
            return
        for node in self.nodes(rule.id):
            self._bound(rule, node, strength, valueset)

    def _bound(self, rule: ElementRule, node: Node, strength: str, valueset: ValueSetCodes) -> None:
        if isinstance(node.value, str):
            if strength == "required" and not any(node.value in codes for codes in valueset.by_system.values()):
                self.issue(rule, f"'{node.value}' is not in {valueset.url}", "code-invalid", node.expr)
            return
        if not isinstance(node.value, Mapping):
            return
        is_coding = "system" in node.value or "code" in node.value  # else a CodeableConcept
        codings = [node] if is_coding else [c for c in _children(node, "coding") if isinstance(c.value, Mapping)]
        for coding in codings:
            system, code = coding.value.get("system"), coding.value.get("code")
            if system in valueset.by_system and not valueset.contains(system, code):
                message = f"'{code}' is not a code of {system} in {valueset.url}"
                self.issue(rule, message, "code-invalid", f"{coding.expr}.code")
        if not any(valueset.contains(c.value.get("system"), c.value.get("code")) for c in codings):
            severity = "error" if strength == "required" else "warning"
            message = f"needs a coding from {valueset.url} ({strength} binding)"
            self.issue(rule, message, "code-invalid", node.expr, severity)

    def extension_profiles(self, rule: ElementRule) -> None:
        for url in rule.type_profiles:
            extension = profiles().get(url)
            if extension is None or extension.type != "Extension" or self.depth > 4:
                continue
            for node in self.nodes(rule.id):
                self.issues += _Check(extension, node.value, node.expr, self.depth + 1).run()

    def invariants(self, rule: ElementRule) -> None:
        path = ".".join(part.split(":")[0] for part in rule.id.split("."))  # choice elements resolve by it
        choice = rule.name.removesuffix("[x]") if rule.name.endswith("[x]") else None
        for invariant in rule.invariants:
            for node in self.nodes(rule.id):
                if choice is None:
                    evaluate = _invariant(invariant.expression, path)
                else:
                    evaluate = _invariant(invariant.expression, _choice_type(node.key, choice), of_type=True)
                try:
                    result = evaluate(node.value)
                except Exception as exc:
                    self.issue(rule, f"invariant {invariant.key} could not be evaluated: {exc}", "invariant", node.expr)
                    continue
                if result == [False]:
                    self.issue(rule, f"{invariant.key}: {invariant.human}", "invariant", node.expr, invariant.severity)

    def run(self) -> list[Issue]:
        for rule in self.profile.elements.values():
            self.cardinality(rule)
            self.closed_slicing(rule)
            self.choice_type(rule)
            self.value(rule)
            self.binding(rule)
            self.extension_profiles(rule)
            self.invariants(rule)
        return self.issues


# --------------------------------------------------------------------------- entry points


def validate(resource: Mapping[str, Any], profile: Profile) -> list[Issue]:
    """Issues of ``resource`` against one profile (empty: conformant)."""
    return _Check(profile, resource, str(resource.get("resourceType", profile.type))).run()


def _claim_issues(resource: Mapping[str, Any], index: int | None, canonical: Any) -> tuple[list[Profile], list[Issue]]:
    """The profiles a canonical names (a core profile with its bases), or why none applies."""
    kind = str(resource.get("resourceType"))
    where = (f"{kind}.meta.profile[{index}]",) if index is not None else ("profile",)
    if isinstance(canonical, str) and canonical.startswith(CORE):
        return _core_claim(kind, canonical, where)
    if not isinstance(canonical, str) or not canonical.startswith(BASE):
        if index is None:  # asked for explicitly ($validate?profile=): say it cannot be checked
            return [], [Issue(f"Profile '{canonical}' is not known here, so it cannot be checked", "not-supported",
                              "error", where)]
        return [], []
    url, _, version = canonical.partition("|")
    profile = profiles().get(url)
    if profile is None:
        known = ", ".join(sorted(p.url.removeprefix(BASE) for p in profiles().values() if p.kind == "resource"))
        return [], [Issue(f"Unknown fhirfus profile '{canonical}' (known: {known})", "not-found", "error", where)]
    if version and version != profile.version:
        message = f"Profile {url} has no version '{version}' (known: {profile.version})"
        return [], [Issue(message, "not-found", "error", where)]
    if profile.kind != "resource" or profile.type != kind:
        return [], [Issue(f"Profile {url} constrains {profile.type}, not {kind}", "invalid", "error", where)]
    return [profile], []


def _core_claim(kind: str, canonical: str, where: tuple[str, ...]) -> tuple[list[Profile], list[Issue]]:
    url = canonical.partition("|")[0]
    chain = _core_chain(url)
    if not chain:  # not a core profile: ignored when claimed, like any profile fhirfus does not hold
        return [], [] if where != ("profile",) else [
            Issue(f"'{canonical}' is not an R4 core profile, so it cannot be checked", "not-found", "error", where)]
    definition = core_profile_definitions()[url]
    if definition.get("type") != kind:
        return [], [Issue(f"Profile {url} constrains {definition.get('type')}, not {kind}", "invalid", "error", where)]
    usable = [p for p in chain if p is not None]
    issues = [] if len(usable) == len(chain) else [
        Issue(f"Parts of R4 profile {url} use slicing this validator cannot check; those parts were not checked",
              "not-supported", "warning", where)]
    return usable, issues


def claimed_issues(resource: Mapping[str, Any], canonical: str) -> list[Issue]:
    """Issues of ``resource`` against one profile named outside the resource (``$validate?profile=``):
    a fhirfus or R4 core profile; any other is an error, as it cannot be checked."""
    chosen, issues = _claim_issues(resource, None, canonical)
    for profile in chosen:
        issues += validate(resource, profile)
    return issues


def profile_issues(resource: Mapping[str, Any], *, implied: bool = True) -> list[Issue]:
    """Issues of ``resource`` against every fhirfus or R4 core profile its ``meta.profile`` claims,
    and, as warnings, against the R4 vital signs profiles it should meet unclaimed (``implied_profiles``).

    ``implied=False`` leaves the unclaimed profiles out: they only ever add warnings, so a write,
    which looks at errors alone, need not check them (the costliest profiles a write meets)."""
    meta = resource.get("meta")
    claimed = meta.get("profile") if isinstance(meta, Mapping) else None
    claimed = claimed if isinstance(claimed, list) else []
    unclaimed = implied_profiles(resource) if implied else []
    if not claimed and not unclaimed:
        return []
    issues: list[Issue] = []
    seen: set[str] = set()
    for index, canonical in enumerate(claimed):
        chosen, problems = _claim_issues(resource, index, canonical)
        issues += problems
        for profile in chosen:
            if profile.url not in seen:
                seen.add(profile.url)
                issues += validate(resource, profile)
    for url in unclaimed:  # reported, not refused: EHRs send vital signs without the category the profile wants
        for implied_profile in _core_chain(url):
            if implied_profile is not None and implied_profile.url not in seen:
                seen.add(implied_profile.url)
                issues += [replace(i, severity="warning") if i.severity in ("error", "fatal") else i
                           for i in validate(resource, implied_profile)]
    return issues
