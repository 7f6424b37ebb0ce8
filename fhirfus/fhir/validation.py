"""Parsing and validation at the edge: JSON → a checked resource dict, or a typed error.

Structure and datatypes are checked with the ``fhir.resources`` R4B models (they parse R4 JSON);
required code bindings, which those models do not check, come from the official R4 definitions
(``fhirfus.fhir.bindings``). The resource is stored as the client sent it, not re-serialised,
so nothing the client wrote is silently lost or reformatted.
"""

from __future__ import annotations

import importlib.util
import re
import typing
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.element import Element
from pydantic import TypeAdapter, ValidationError

from fhirfus.errors import InvalidRequest, InvalidResource, Issue, NotFound
from fhirfus.fhir.bindings import resource_types
from fhirfus.fhir.checks import rule_issues

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


@cache
def served_types() -> frozenset[str]:
    """R4 resource types that the R4B models can parse (all that fhirfus needs).

    Checked by module presence, not by importing 146 model modules (that takes seconds).
    """
    return frozenset(
        name for name in resource_types() if importlib.util.find_spec(f"fhir.resources.R4B.{name.lower()}") is not None
    )


def require_known_type(resource_type: str) -> None:
    if resource_type not in served_types():
        raise NotFound(f"Unknown resource type '{resource_type}'", resource_type)


def valid_id(value: object) -> bool:
    """The R4 id rule (``[A-Za-z0-9\\-\\.]{1,64}``), the one test of every id: URL, body, Bundle entry."""
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def shown(value: object, limit: int = 70) -> str:
    """A client's value quoted in a message: escaped (NUL, controls) and cut to a readable length."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def require_valid_id(resource_id: object, resource_type: str, expression: str | None = None) -> None:
    """400 unless ``resource_id`` follows the R4 id rule: checked before it reaches SQL, where a NUL or
    an overlong id would be a database error rather than an answer."""
    if not valid_id(resource_id):
        raise InvalidRequest(
            f"Invalid id {shown(resource_id)}: 1-64 characters of A-Z, a-z, 0-9, '-' and '.'",
            expression or f"{resource_type}.id",
        )


#: Version ids fhirfus assigns: 1, 2, 3 … (no sign, no leading zero, within a 32-bit column).
VERSION_PATTERN = re.compile(r"[1-9][0-9]{0,8}")


def parse_version_id(version_id: str) -> int:
    """The version number of a ``_history/{vid}`` URL; anything else is a 400, not a lookup."""
    if not VERSION_PATTERN.fullmatch(version_id):
        raise InvalidRequest(f"Invalid version id {shown(version_id)}: a positive integer is expected",
                             "meta.versionId")
    return int(version_id)


#: Bundle types that are requests or answers of the REST API, not content: stored, they would be
#: data that looks like work (a transaction POSTed to ``/Bundle`` instead of the base URL).
UNSTORABLE_BUNDLE_TYPES = frozenset({"batch", "transaction", "batch-response", "transaction-response"})


def require_storable(resource: dict) -> None:
    """400 for a resource that is valid FHIR but not something to store (a batch or transaction Bundle)."""
    if resource.get("resourceType") == "Bundle" and resource.get("type") in UNSTORABLE_BUNDLE_TYPES:
        raise InvalidResource(
            f"A Bundle of type '{resource['type']}' is not stored: POST a batch or transaction to the base URL",
            "Bundle.type",
        )


def parameter_list(parameters: Mapping[str, Any]) -> list:
    """The ``parameter`` array of a Parameters resource (absent: empty): the one reader every
    operation body goes through, so a ``parameter`` of another JSON type is a 400, not a crash."""
    items = parameters.get("parameter", [])
    if not isinstance(items, list):
        raise InvalidRequest(f"Parameters.parameter must be an array, got {shown(items)}", "Parameters.parameter")
    return items


def parameter_parts(parameter: Mapping[str, Any], where: str) -> list[Mapping[str, Any]]:
    """The ``part`` array of one parameter (absent: empty), each part an object with a string
    ``name``: like ``parameter_list``, so a ``part`` of another JSON type is a 400 naming it."""
    items = parameter.get("part") or []
    if not isinstance(items, list):
        raise InvalidRequest(f"{where}.part must be an array, got {shown(items)}", f"{where}.part")
    for index, part in enumerate(items):
        if not isinstance(part, Mapping) or not isinstance(part.get("name"), str):
            raise InvalidRequest("Every part needs a name", f"{where}.part[{index}]")
    return items


def parse_json(body: bytes) -> Any:
    """Decode a JSON body; malformed JSON is a 400 that says where it broke, and so is a NUL
    character (``\\u0000``) in any string or name: no FHIR string may hold one, and PostgreSQL
    cannot store one."""
    if not body.strip():
        raise InvalidRequest("The request body is empty; a FHIR resource was expected")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"Malformed JSON: {exc}") from exc
    if b"\\u0000" in body:  # the only way JSON spells a NUL: the walk below runs for these bodies only
        where = nul_path(data)
        if where is not None:
            raise InvalidRequest(f"The string at '{where}' contains a NUL character (\\u0000)", where)
    return data


def nul_path(data: Any) -> str | None:
    """The FHIRPath-like location of the first string or name holding a NUL (iterative: depth is the
    client's choice)."""
    root = data.get("resourceType") if isinstance(data, dict) else None
    stack: list[tuple[Any, str]] = [(data, root if isinstance(root, str) and "\x00" not in root else "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return path or "$"
        elif isinstance(value, dict):
            for key, item in value.items():
                inner = f"{path}.{key}" if path else key
                if "\x00" in key:
                    return inner.replace("\x00", "\\u0000")
                stack.append((item, inner))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{index}]") for index, item in enumerate(value))
    return None


def _expression(prefix: str, loc: tuple[Any, ...]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part not in ("__root__",):
            path += f".{part}"
    return path


#: What a model reports about a document: (pydantic error type, location, message) per error.
Errors = tuple[tuple[str, tuple[Any, ...], str], ...]


def _model_errors(model: Any, data: dict) -> Errors:
    try:
        model.model_validate(data)
    except ValidationError as exc:
        return tuple((e.get("type", ""), tuple(e.get("loc", ())), str(e.get("msg", ""))) for e in exc.errors(include_url=False))
    except (ValueError, TypeError, AttributeError) as exc:  # models raise these for some malformed primitives
        return (("malformed", (), str(exc)),)  # (a ``url`` given a number: AttributeError from its validator)
    except KeyError as exc:  # a nested resource of a type the models do not know
        return (("malformed", (), f"a nested resource of an unknown type ({str(exc)[:80]})"),)
    except RecursionError:
        return (("malformed", (), "nested too deeply to be checked"),)
    return ()


def _issues(prefix: str, errors: Errors) -> list[Issue]:
    issues = []
    for kind, loc, message in errors:
        expression = _expression(prefix, loc)
        if kind == "malformed":
            issues.append(Issue(f"Invalid {prefix}: {message}", "structure", "error", (prefix,)))
        elif kind == "extra_forbidden":
            issues.append(Issue(f"Unknown element '{expression}'", "structure", "error", (expression,)))
        elif kind == "missing":
            issues.append(Issue(f"Missing required element '{expression}'", "required", "error", (expression,)))
        else:
            issues.append(Issue(f"Invalid value at '{expression}': {message}", "value", "error", (expression,)))
    return issues


# A QuestionnaireResponse is checked item by item, and the check of an item remembered: a TWSTRS
# response is ~40 items, most of them seen before ({"linkId": "sev-rotation", "answer":
# [{"valueInteger": 2}]}), and validated whole it cost 0.46 ms, seven times a Condition. A model
# checks an element the same wherever it sits, so the outcome of an identical item can be reused.
_ITEMS_KEPT = 4096
_item_errors: dict[bytes, Errors] = {}


def _without_items(element: dict) -> dict:
    return {k: v for k, v in element.items() if k != "item"}


def _items(element: dict) -> list[dict] | None:
    """The element's ``item`` list when it can be checked item by item (a list of objects)."""
    items = element.get("item")
    return items if isinstance(items, list) and all(isinstance(i, dict) for i in items) else None


def _split_issues(element: dict, path: str, check: Callable[[dict], Errors]) -> list[Issue]:
    """Issues of ``element`` checked without its ``item`` list by ``check``, then of each item."""
    items = _items(element)
    if items is None:
        return _issues(path, check(element))
    issues = _issues(path, check(_without_items(element)))
    for index, item in enumerate(items):
        issues += _split_issues(item, f"{path}.item[{index}]", _checked_item)
    return issues


#: Larger items (an attachment, a long text) are checked every time: they rarely repeat, and
#: remembering them would let the memo grow to gigabytes.
_ITEM_KEY_MAX = 2048


def _checked_item(item: dict) -> Errors:
    try:
        key: bytes | None = orjson.dumps(item)
    except TypeError:  # e.g. an integer beyond 64 bits: the model reports it
        key = None
    if key is None or len(key) > _ITEM_KEY_MAX:
        return _model_errors(_item_model(), item)
    errors = _item_errors.get(key)
    if errors is None:
        errors = _model_errors(_item_model(), item)
        if len(_item_errors) >= _ITEMS_KEPT:
            _item_errors.clear()
        _item_errors[key] = errors
    return errors


@cache
def _item_model() -> Any:
    from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponseItem

    return QuestionnaireResponseItem


# The elements of a resource (its datatypes and backbone elements) are checked once per distinct
# JSON value, and the resource's model is handed the checked instances (which pydantic takes as
# they are): a patient's reference, the codes and units of a study, the item scores of a TWSTRS
# Observation's components recur in every Bundle. Only a valid outcome is taken from this path;
# anything else is checked again whole, so every message and location is the model's own.
#: The memo is bounded by the JSON it holds, not only by entries: a checked instance costs some
#: hundred times its JSON in memory, so only short elements are kept, up to a total size.
_SHARED_KEPT = 8192
_SHARED_ITEM_MAX = 512
_SHARED_JSON_KEPT = 1 << 20
_shared: dict[tuple[type, bytes], Any] = {}  # (model class, JSON) → checked instance, None when invalid
_shared_json = [0]  # bytes of JSON in ``_shared``


@cache
def _shared_fields(resource_type: str) -> dict[str, Any]:
    """JSON key → model class of the resource's elements checked once per value: every complex
    datatype and backbone element (not a contained resource, not a primitive)."""
    fields: dict[str, Any] = {}
    for name, field in get_fhir_model_class(resource_type).model_fields.items():
        stack = [field.annotation]
        while stack:
            annotation = stack.pop()
            klass = getattr(annotation, "get_model_klass", None)
            if klass is not None:
                model = klass()
                if isinstance(model, type) and issubclass(model, Element):
                    fields[field.alias or name] = model
                break
            stack.extend(typing.get_args(annotation))
    return fields


def _instance(model: Any, value: dict) -> Any:
    """The checked instance of an element (None: invalid, or not JSON orjson can write); remembered
    by its JSON when that is short (a long one, a Bundle entry say, is checked each time)."""
    try:
        blob = orjson.dumps(value)
    except TypeError:
        return None
    if len(blob) > _SHARED_ITEM_MAX:
        return _checked(model, value)
    key = (model, blob)
    try:
        return _shared[key]
    except KeyError:
        pass
    found = _checked(model, value)
    if len(_shared) >= _SHARED_KEPT or _shared_json[0] >= _SHARED_JSON_KEPT:
        _shared.clear()
        _shared_json[0] = 0
    _shared[key] = found
    _shared_json[0] += len(blob)
    return found


def _checked(model: Any, value: dict) -> Any:
    try:
        return model.model_validate(value)
    except (ValidationError, ValueError, TypeError, AttributeError, KeyError, RecursionError):
        return None


# A resource's model costs the same fixed work whatever the resource holds: the model walks all
# of its fields in its own checks, twice, for a resource that fills a handful of them. The
# fast path below checks the fields present, each with the model's own type for it (a shared
# datatype by its remembered instance, a short primitive by a remembered verdict), and makes the
# model's own checks of the whole (no unknown key, no null, one value per choice, the required
# elements there) itself. It only ever says "valid"; whatever it cannot decide goes to the model.
_VERDICTS_KEPT = 8192
_verdicts: dict[tuple[Any, ...], bool] = {}
#: The model-level checks the fast path makes itself (any other: the type has no fast path).
_MODEL_CHECKS = frozenset({"reject_null_complex_elements", "validate_after_model_construction"})


class _Field(typing.NamedTuple):
    name: str  # the model's field name
    repeated: bool  # the element is a list
    shared: Any  # the model of a complex element (checked once per value: ``_instance``), else None
    annotation: Any  # the field's own type (its validator is built when first needed: ``_adapter``)


class _FastPlan(typing.NamedTuple):
    fields: dict[str, _Field]  # JSON key → field (no ``_x`` partners: those go to the model)
    required: frozenset[str]  # JSON keys that must hold a value
    choices: tuple[tuple[frozenset[str], bool], ...]  # the keys of each choice element, whether required


@cache
def _fast_plan(resource_type: str) -> _FastPlan | None:
    """How the fast path checks a type, or None when the model does more than the fast path knows
    (a validator of its own, a constructor of its own)."""
    from fhir_core.fhirabstractmodel import FHIRAbstractModel

    model = get_fhir_model_class(resource_type)
    decorators = model.__pydantic_decorators__
    if (set(decorators.model_validators) - _MODEL_CHECKS or decorators.field_validators or decorators.validators
            or decorators.root_validators or model.__init__ is not FHIRAbstractModel.__init__):
        return None
    shared = _shared_fields(resource_type)
    fields: dict[str, _Field] = {}
    required: set[str] = set()
    for name, info in model.model_fields.items():
        key = info.alias or name
        if info.is_required():
            required.add(key)
        if key.startswith("_") or name == "fhir_comments":
            continue
        annotation: Any = info.annotation
        repeated = typing.get_origin(annotation) is list or any(
            typing.get_origin(arg) is list for arg in typing.get_args(annotation))
        fields[key] = _Field(name, repeated, shared.get(key), annotation)
    aliases = {info.alias or name: name for name, info in model.model_fields.items()}
    named = {name: key for key, name in aliases.items()}
    required.update(element for element, _ in model.get_required_fields(None))  # type: ignore[arg-type]
    choices = tuple(
        (frozenset(named[name] for name in group),
         (model.model_fields[group[0]].json_schema_extra or {}).get("one_of_many_required") is True)  # type: ignore[union-attr]
        for group in model.get_one_of_many_fields(None).values()  # type: ignore[arg-type]
    )
    if not required <= fields.keys() or any(not keys <= fields.keys() for keys, _ in choices):
        return None
    return _FastPlan(fields, frozenset(required), choices)


def _fast_valid(resource_type: str, data: dict) -> bool:
    """True when the fast path finds the resource valid (False: it cannot tell, the model decides)."""
    plan = _fast_plan(resource_type)
    if plan is None:
        return False
    fields = plan.fields
    for key, value in data.items():
        if key == "resourceType":
            continue
        field = fields.get(key)
        if field is None or value is None or not _field_valid(resource_type, key, field, value):
            return False
    if not plan.required <= data.keys():
        return False
    for keys, needed in plan.choices:
        present = len(keys.intersection(data))
        if present > 1 or (needed and not present):
            return False
    return True


def _field_valid(resource_type: str, key: str, field: _Field, value: Any) -> bool:
    if field.repeated:
        if not isinstance(value, list) or any(item is None for item in value):
            return False
        if field.shared is not None:
            return all(isinstance(item, dict) and _instance(field.shared, item) is not None for item in value)
    elif field.shared is not None:
        return isinstance(value, dict) and _instance(field.shared, value) is not None
    if value.__class__ in (str, int, float, bool) and (value.__class__ is not str or len(value) <= _ITEM_KEY_MAX):
        memo = (resource_type, key, value.__class__, value)
        verdict = _verdicts.get(memo)
        if verdict is None:
            verdict = _adapter_accepts(_adapter(resource_type, key), value)
            if len(_verdicts) >= _VERDICTS_KEPT:
                _verdicts.clear()
            _verdicts[memo] = verdict
        return verdict
    return _adapter_accepts(_adapter(resource_type, key), value)


@cache
def _adapter(resource_type: str, key: str) -> TypeAdapter[Any]:
    """A validator of one field's type, built once and only for the fields met (building one for
    every field of a model would hold up a server's first write of each type)."""
    plan = _fast_plan(resource_type)
    assert plan is not None
    return TypeAdapter(plan.fields[key].annotation)


def _adapter_accepts(adapter: TypeAdapter[Any], value: Any) -> bool:
    """Whether the field's type takes ``value``; any failure, of whatever kind, leaves the verdict
    (and its message) to the model."""
    try:
        adapter.validate_python(value)
    except Exception:
        return False
    return True


def _valid_with_shared(model: Any, resource_type: str, data: dict) -> bool:
    """Whether the resource is valid, its common datatypes checked once per distinct value (False
    also when this path cannot tell: the caller then checks it whole)."""
    if _fast_valid(resource_type, data):
        return True
    shared = _shared_fields(resource_type)
    shell = dict(data)
    for key, value in data.items():
        element_model = shared.get(key)
        if element_model is None:
            continue
        if isinstance(value, dict):
            checked = _instance(element_model, value)
            if checked is None:
                return False
            shell[key] = checked
        elif isinstance(value, list):
            items = []
            for item in value:
                if isinstance(item, dict):
                    item = _instance(element_model, item)
                    if item is None:
                        return False
                items.append(item)
            shell[key] = items
    return _accepts(model, shell)


def _accepts(model: Any, data: dict) -> bool:
    """Whether ``model`` takes ``data``, through its constructor: ``model_validate`` of a FHIR model
    calls that same constructor (which validates everything) and then runs the model's after-checks
    a second time: the same verdict for less work."""
    try:
        model(**data)
    except (ValidationError, ValueError, TypeError, AttributeError, KeyError, RecursionError):  # AttributeError: a `url` given a number
        return False
    return True


def _structure_issues(resource_type: str, data: dict) -> list[Issue]:
    model = get_fhir_model_class(resource_type)
    if resource_type == "QuestionnaireResponse":
        return _split_issues(data, resource_type, lambda shell: () if _valid_with_shared(
            model, resource_type, shell) else _model_errors(model, shell))
    if _valid_with_shared(model, resource_type, data):
        return []
    errors = _model_errors(model, data)
    if any(kind == "malformed" for kind, _, _ in errors):  # the model could not say where: the R4 rules can
        located = [issue for issue in rule_issues(data, resource_type) if issue.severity in ("error", "fatal")]
        if located:
            return located
    return _issues(resource_type, errors)


def resource_issues(data: Any, expected_type: str | None = None, *, warnings: bool = False) -> list[Issue]:
    """All problems of a candidate resource (empty list when valid). Used by writes and $validate;
    ``warnings``: also the issues that do not refuse a write (``$validate`` reports them)."""
    if not isinstance(data, dict):
        return [Issue("A FHIR resource must be a JSON object", "structure")]
    resource_type = data.get("resourceType")
    if not isinstance(resource_type, str):
        return [Issue("Missing 'resourceType'", "required", "error", ("resourceType",))]
    if resource_type not in served_types():
        return [Issue(f"Unknown resource type '{resource_type}'", "not-supported", "error", ("resourceType",))]
    if expected_type is not None and resource_type != expected_type:
        return [
            Issue(
                f"resourceType '{resource_type}' does not match the type '{expected_type}' of the URL",
                "invalid",
                "error",
                ("resourceType",),
            )
        ]
    rid = data.get("id")
    if rid is not None and not valid_id(rid):
        return [Issue(f"Invalid id {shown(rid)}", "value", "error", (f"{resource_type}.id",))]
    issues = _structure_issues(resource_type, data)
    if issues:
        return issues
    issues = rule_issues(data, resource_type)  # required bindings and reference targets first
    return issues if warnings else [i for i in issues if i.severity in ("error", "fatal")]


def validate_resource(data: Any, expected_type: str | None = None) -> dict:
    """Return the resource if valid, else raise ``InvalidResource`` carrying every issue."""
    issues = resource_issues(data, expected_type)
    if issues:
        raise InvalidResource(issues[0].diagnostics, issues=issues)
    return data
