"""What a ``$import`` kick-off names, and fetching it.

A kick-off is one of
- a ``Parameters`` resource in the style of the Bulk Data Import draft and HAPI FHIR: ``inputFormat``
  (``application/fhir+ndjson``), ``inputSource``, optional ``storageDetail`` (type ``https``), and
  repeated ``input`` parts, each with ``type`` and ``url``;
- a manifest (plain JSON): a Bulk Data ``$export`` completion manifest (``output``: ``type`` and
  ``url`` per file) or the same shape with ``input`` instead of ``output``;
- a ``Parameters`` resource with ``manifestUrl`` (as the Bulk Data "ping and pull" proposal): the
  URL of a finished ``$export``'s completion manifest, fetched at kick-off; its ``output`` files
  are the inputs;
- the NDJSON itself (``Content-Type: application/fhir+ndjson``), resources of any types.

Inputs are fetched with plain ``GET`` over http(s) only, without credentials. SSRF: a URL whose host
resolves to a loopback, private, link-local or otherwise non-public address is refused unless the
host is listed in ``FHIRFUS_IMPORT_ALLOWED_HOSTS`` (the tests list ``127.0.0.1``), and the request goes
to the address that was checked (no second DNS lookup to rebind); redirects are followed by hand,
each hop checked the same way. A ``manifestUrl`` is read while the kick-off
waits, so it must arrive whole within the fetch timeout (a server trickling bytes cannot hold the
request).
"""

from __future__ import annotations

import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

from fhirfus.addresses import http_url, is_public, pinned
from fhirfus.errors import FhirError, InvalidRequest
from fhirfus.fhir.validation import parameter_list, parameter_parts, parse_json, require_known_type, validate_resource

NDJSON_FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")
MAX_REDIRECTS = 5
MANIFEST_BYTES = 16 * 1024 * 1024


class FetchFailed(FhirError):
    """An input could not be fetched (the job fails naming the URL)."""

    status = 502
    issue_code = "transient"


@dataclass(frozen=True)
class ImportInput:
    """One input: its resource type (None: each line says its own) and where it comes from."""

    res_type: str | None
    url: str

    def to_json(self) -> dict:
        return {"type": self.res_type, "url": self.url}


@dataclass(frozen=True)
class FetchLimits:
    max_inputs: int
    max_bytes: int
    timeout: float
    allowed_hosts: tuple[str, ...]


def parse_kick_off(body: Any, limits: FetchLimits) -> tuple[list[ImportInput], str | None]:
    """(inputs, inputSource) of a Parameters body or a manifest; 400 naming the element otherwise."""
    if not isinstance(body, dict):
        raise InvalidRequest("A $import kick-off is a Parameters resource or a manifest (JSON object)", "body")
    if body.get("resourceType") == "Parameters":
        inputs, source = _from_parameters(body, limits)
    elif body.get("resourceType") is None:
        inputs, source = _from_manifest(body)
    else:
        raise InvalidRequest(f"A $import kick-off cannot be a {body.get('resourceType')}", "resourceType")
    if not inputs:
        raise InvalidRequest("A $import kick-off needs at least one input", "input")
    if len(inputs) > limits.max_inputs:
        raise InvalidRequest(f"{len(inputs)} inputs exceed the limit of {limits.max_inputs} per job", "input")
    for index, item in enumerate(inputs):
        check_url(item.url, limits.allowed_hosts, f"input[{index}].url")
    return inputs, source


def _from_parameters(body: dict, limits: FetchLimits) -> tuple[list[ImportInput], str | None]:
    validate_resource(body, "Parameters")
    inputs: list[ImportInput] = []
    source: str | None = None
    for index, parameter in enumerate(parameter_list(body)):
        where = f"Parameters.parameter[{index}]"
        if not isinstance(parameter, Mapping):
            raise InvalidRequest("Every parameter is an object with a name", where)
        name = parameter.get("name")
        if name == "inputFormat":
            _check_format(_value(parameter), f"{where}.value")
        elif name == "inputSource":
            source = _value(parameter)
        elif name == "storageDetail":
            for part in parameter_parts(parameter, where):
                if part.get("name") == "type" and _value(part) not in ("https", "http"):
                    raise InvalidRequest(f"storageDetail type '{_value(part)}' is not supported (https only)",
                                         f"{where}.part")
        elif name == "input":
            parts = {part["name"]: _value(part) for part in parameter_parts(parameter, where)}
            inputs.append(_input(parts.get("type"), parts.get("url"), f"{where}.part"))
        elif name == "manifestUrl":
            inputs += manifest_inputs(_value(parameter), limits, f"{where}.value")
        elif name not in ("mode", "_type"):
            raise InvalidRequest(f"Unknown $import parameter '{name}'", f"{where}.name")
    return inputs, source


def manifest_inputs(url: Any, limits: FetchLimits, where: str) -> list[ImportInput]:
    """The files of the completion manifest at ``url`` (400 naming ``where`` when it cannot be used)."""
    if not isinstance(url, str):
        raise InvalidRequest("manifestUrl is a URL", where)
    checked = check_url(url, limits.allowed_hosts, where)
    with tempfile.TemporaryFile() as handle:
        try:
            with httpx.Client(timeout=limits.timeout, follow_redirects=False) as http, \
                    http.stream("GET", checked.url, headers={"Accept": "application/json", **checked.headers},
                                extensions=checked.extensions) as response:
                if response.status_code != 200:
                    raise InvalidRequest(f"GET {url} answered {response.status_code}", where)
                size = 0
                deadline = time.monotonic() + limits.timeout
                for block in response.iter_bytes():  # as it arrives, so a trickle meets the deadline
                    size += len(block)
                    if size > MANIFEST_BYTES:
                        raise InvalidRequest(f"The manifest at {url} is larger than {MANIFEST_BYTES} bytes", where)
                    if time.monotonic() > deadline:
                        raise InvalidRequest(f"The manifest at {url} took longer than {limits.timeout} s to read", where)
                    handle.write(block)
        except httpx.HTTPError as exc:
            raise InvalidRequest(f"GET {url} failed: {exc}", where) from exc
        handle.seek(0)
        try:
            manifest = parse_json(handle.read())
        except InvalidRequest as exc:
            raise InvalidRequest(f"The manifest at {url}: {exc.message}", where) from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("output"), list):
        raise InvalidRequest(f"{url} is not a Bulk Data completion manifest (no output list)", where)
    if manifest.get("requiresAccessToken"):
        raise InvalidRequest(f"The files of {url} require an access token, which $import does not send", where)
    return [_input(item.get("type") if isinstance(item, dict) else None,
                   _joined(url, item.get("url"), f"{where} output[{index}].url") if isinstance(item, dict) else None,
                   f"{where} output[{index}]")
            for index, item in enumerate(manifest["output"])]


def _joined(base: str, url: Any, where: str) -> str | None:
    """A manifest's file URL, resolved against the manifest's own (400 naming it when malformed)."""
    if not isinstance(url, str):
        return None
    try:
        return urljoin(base, url)
    except ValueError as exc:
        raise InvalidRequest(f"'{url}' is not a well-formed URL ({exc})", where) from exc


def _from_manifest(body: dict) -> tuple[list[ImportInput], str | None]:
    key = "input" if "input" in body else "output"
    items = body.get(key)
    if not isinstance(items, list):
        raise InvalidRequest("A manifest lists its files in 'output' (an export manifest) or 'input'", key)
    if "inputFormat" in body:
        _check_format(body["inputFormat"], "inputFormat")
    inputs = [_input(item.get("type") if isinstance(item, dict) else None,
                     item.get("url") if isinstance(item, dict) else None, f"{key}[{index}]")
              for index, item in enumerate(items)]
    source = body.get("inputSource") or body.get("request")
    return inputs, source if isinstance(source, str) else None


def _value(parameter: Mapping[str, Any]) -> Any:
    return next((v for k, v in parameter.items() if k.startswith("value")), None)


def _check_format(value: Any, where: str) -> None:
    if value not in NDJSON_FORMATS:
        raise InvalidRequest(f"inputFormat '{value}' is not supported (application/fhir+ndjson)", where)


def _input(res_type: Any, url: Any, where: str) -> ImportInput:
    if res_type is not None:
        if not isinstance(res_type, str):
            raise InvalidRequest("An input's type is a resource type", f"{where}.type")
        try:
            require_known_type(res_type)
        except FhirError as exc:
            raise InvalidRequest(exc.message, f"{where}.type") from exc
    if not isinstance(url, str) or not url:
        raise InvalidRequest("Every input needs a url", f"{where}.url")
    return ImportInput(res_type, url)


@dataclass(frozen=True)
class Checked:
    """A URL as it is requested once checked: its host replaced by the address that was judged (so a
    second DNS answer, a rebinding, cannot send the request elsewhere), with ``Host`` and the TLS
    server name (which the certificate is checked against) kept as the URL said."""

    url: str
    headers: dict[str, str]
    extensions: dict[str, Any]


def check_url(url: str, allowed_hosts: Iterable[str], where: str) -> Checked:
    """400 unless ``url`` is a well-formed http(s) URL with a host that is public (``addresses.is_public``:
    also through an IPv4 address an IPv6 form embeds), or listed as allowed; how to request it."""
    try:
        parts = http_url(url)
    except ValueError as exc:
        raise InvalidRequest(str(exc), where) from exc
    if parts.username or parts.password:
        raise InvalidRequest(f"'{url}' carries credentials; they are not accepted in a URL", where)
    host = parts.hostname or ""
    if host in allowed_hosts:
        return Checked(url, {}, {})
    try:
        found = socket.getaddrinfo(host, parts.port or 443, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidRequest(f"The host of '{url}' cannot be resolved", where) from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
    for address in addresses:
        if not is_public(address):
            raise InvalidRequest(
                f"The host of '{url}' is a non-public address ({address}); list it in FHIRFUS_IMPORT_ALLOWED_HOSTS "
                "to import from it", where)
    if not addresses:
        raise InvalidRequest(f"The host of '{url}' cannot be resolved", where)
    return Checked(*pinned(url, addresses[0]))


def fetch(url: str, target: Path, limits: FetchLimits, budget: int, alive: Callable[[], None] = lambda: None) -> int:
    """Download ``url`` into ``target`` (at most ``budget`` bytes, decoded); its size. ``alive`` is
    called after every block read (the job's heartbeat: a long download must not look like a dead process)."""
    with httpx.Client(timeout=limits.timeout, follow_redirects=False,
                      headers={"Accept": "application/fhir+ndjson"}) as http:
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            checked = check_url(current, limits.allowed_hosts, "url")
            try:
                with http.stream("GET", checked.url, headers=checked.headers, extensions=checked.extensions) as response:
                    if response.is_redirect and "location" in response.headers:
                        try:
                            current = urljoin(current, response.headers["location"])
                        except ValueError as exc:
                            raise FetchFailed(f"GET {url} redirected to a malformed URL ({exc})", "url") from exc
                        continue
                    if response.status_code != 200:
                        raise FetchFailed(f"GET {url} answered {response.status_code}", "url")
                    size = 0
                    with target.open("wb") as handle:
                        for block in response.iter_bytes():  # as read: a trickle still beats and can be cancelled
                            size += len(block)
                            if size > budget:
                                raise InvalidRequest(
                                    f"{url}: the inputs exceed the limit of {limits.max_bytes} bytes per job", "url")
                            handle.write(block)
                            alive()
                    return size
            except httpx.HTTPError as exc:
                raise FetchFailed(f"GET {url} failed: {exc}", "url") from exc
        raise FetchFailed(f"GET {url}: more than {MAX_REDIRECTS} redirects", "url")
