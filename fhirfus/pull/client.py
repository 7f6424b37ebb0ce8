"""A Bulk Data v2 client: SMART Backend Services token, kick-off, polling, downloads.

Written against the specification, not against fhirfus: the manifests of HAPI FHIR and Medplum
work too (``requiresAccessToken`` says whether a file URL gets the bearer token; a server that
wants it for files anyway answers 401, and the download is retried once with it).

Downloads are resumable: a file is written to ``NAME.part`` and renamed when complete; a rerun
asks for the rest with ``Range: bytes=N-`` (uncompressed, so offsets mean the same on both
sides) and appends when the server answers 206, or starts again on a 200. gzip is accepted for a
download from the start. The sha256 of each finished file is what is recorded and loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fhirfus.addresses import is_public
from fhirfus.errors import FhirError

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: The longest wait between two polls, whatever ``Retry-After`` says.
MAX_POLL_SECONDS = 60
#: Polls of one export before the pull gives up.
MAX_POLLS = 10_000
CHUNK_BYTES = 1 << 20
#: The most a source may send for one file (decoded: a gzip bomb counts at its unpacked size);
#: ``FHIRFUS_PULL_MAX_FILE_BYTES`` passes the server's setting.
MAX_FILE_BYTES = 8 << 30
#: The most a source may answer to anything read into memory (smart-configuration, token, status, manifest).
MAX_ANSWER_BYTES = 16 << 20


class PullError(FhirError):
    """The source server refused or failed (the message says which step and what it answered)."""

    status = 502
    issue_code = "transient"


@dataclass(frozen=True)
class SigningKey:
    """A private key (RS384 or ES384) and the ``kid`` the source knows it by."""

    key: Any
    algorithm: str
    kid: str | None

    @classmethod
    def read(cls, path: Path, kid: str | None = None) -> SigningKey:
        """A PEM private key, or a private JWK (or a JWKS holding one) with its ``kid``."""
        data = path.read_bytes()
        if data.lstrip().startswith(b"{"):
            document = orjson.loads(data)
            jwk = next((k for k in document.get("keys", [document]) if "d" in k), None)
            if jwk is None:
                raise PullError(f"{path} holds no private key (a JWK with 'd')", "key")
            algorithm = jwk.get("alg") or ("RS384" if jwk.get("kty") == "RSA" else "ES384")
            key = jwt.PyJWK(jwk, algorithm).key
            return cls(key, algorithm, kid or jwk.get("kid"))
        key = serialization.load_pem_private_key(data, password=None)
        if isinstance(key, rsa.RSAPrivateKey):
            return cls(key, "RS384", kid)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return cls(key, "ES384", kid)
        raise PullError(f"{path}: only RSA (RS384) and EC (ES384) keys sign SMART assertions", "key")


@dataclass(frozen=True)
class Downloaded:
    path: Path
    sha256: str
    size: int
    resumed_from: int


class BulkClient:
    """One source server as one client: the token is fetched when needed and renewed on 401."""

    def __init__(self, base_url: str, client_id: str, key: SigningKey, *, scope: str = "system/*.rs",
                 transport: httpx.BaseTransport | None = None, sleep: Callable[[float], None] = time.sleep,
                 timeout: float = 60.0, max_file_bytes: int = MAX_FILE_BYTES) -> None:
        self.base = base_url.rstrip("/")
        self.client_id = client_id
        self.key = key
        self.scope = scope
        self.sleep = sleep
        self.http = httpx.Client(timeout=timeout, transport=transport, follow_redirects=True,
                                 event_hooks={"request": [self._check_host]})
        self.max_file_bytes = max_file_bytes
        self._token: str | None = None
        self._files_want_token = False  # learnt from a 401 on a file the manifest said needs none

    def close(self) -> None:
        self.http.close()

    def _check_host(self, request: httpx.Request) -> None:
        """Every request (a redirect's too) goes to the source's own host or to a public address: a
        hostile source cannot point the hub, by a manifest's file URL, a token endpoint or a
        redirect, at a service on the hub's network (the source itself may be on a private one)."""
        host = request.url.host
        if host == (urlsplit(self.base).hostname or ""):
            return
        try:
            found = {str(info[4][0]) for info in socket.getaddrinfo(host, request.url.port or 443)}
        except (OSError, UnicodeError) as exc:
            raise PullError(f"{request.url}: its host cannot be resolved", "source") from exc
        if not found or not all(is_public(address) for address in found):
            raise PullError(f"{request.url} is neither on the source's host nor at a public address; the hub does "
                            "not fetch it", "source")

    # --- authentication ---------------------------------------------------------------------

    def token_endpoint(self) -> str:
        response = self._read("GET", f"{self.base}/.well-known/smart-configuration",
                              headers={"Accept": "application/json"})
        if response.status_code != 200:
            raise PullError(f"{self.base}/.well-known/smart-configuration answered {response.status_code}", "source")
        endpoint = _json_object(response).get("token_endpoint")
        if not isinstance(endpoint, str):
            raise PullError("the source's smart-configuration names no token_endpoint", "source")
        return endpoint

    def authenticate(self) -> str:
        endpoint = self.token_endpoint()
        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": endpoint, "exp": now + 240,
                  "jti": str(uuid.uuid4())}
        headers = {"kid": self.key.kid} if self.key.kid else {}
        assertion = jwt.encode(claims, self.key.key, algorithm=self.key.algorithm, headers=headers)
        response = self._read("POST", endpoint, data={
            "grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion, "scope": self.scope})
        if response.status_code != 200:
            raise PullError(f"the token endpoint {endpoint} refused the client: {response.status_code} "
                            f"{response.text[:300]}", "client-id")
        token = _json_object(response).get("access_token")
        if not isinstance(token, str) or not token:
            raise PullError(f"the token endpoint {endpoint} answered no access_token", "client-id")
        self._token = token
        return token

    def _send(self, method: str, url: str, *, auth: bool = True, **kwargs: Any) -> httpx.Response:
        """A request with the bearer token (fetched or renewed once on 401)."""
        headers = dict(kwargs.pop("headers", {}))
        if auth and self._token is None:
            self.authenticate()
        if auth:
            headers["Authorization"] = f"Bearer {self._token}"
        response = self._read(method, url, headers=headers, **kwargs)
        if auth and response.status_code == 401:
            self.authenticate()
            headers["Authorization"] = f"Bearer {self._token}"
            response = self._read(method, url, headers=headers, **kwargs)
        return response

    def _read(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """A request whose answer is read into memory: at most ``MAX_ANSWER_BYTES`` of it (a source
        answering a status poll with gigabytes fails the pull instead of the process)."""
        request = self.http.build_request(method, url, **kwargs)
        response = self.http.send(request, stream=True)
        body = bytearray()
        try:
            for block in response.iter_bytes():
                body += block
                if len(body) > MAX_ANSWER_BYTES:
                    raise PullError(f"{url} answered more than {MAX_ANSWER_BYTES} bytes", "source")
        finally:
            response.close()
        headers = [(k, v) for k, v in response.headers.multi_items()
                   if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
        return httpx.Response(response.status_code, headers=headers, content=bytes(body), request=response.request)

    # --- export -----------------------------------------------------------------------------

    def kick_off(self, *, group: str | None = None, patient_level: bool = False, types: tuple[str, ...] = (),
                 since: str | None = None) -> str:
        """Start an export (system, Patient or Group level); its status URL."""
        path = f"/Group/{group}/$export" if group else "/Patient/$export" if patient_level else "/$export"
        params = [("_type", ",".join(types))] if types else []
        if since:
            params.append(("_since", since))
        url = f"{self.base}{path}" + (f"?{urlencode(params)}" if params else "")
        response = self._send("GET", url, headers={"Prefer": "respond-async", "Accept": "application/fhir+json"})
        if response.status_code != 202 or "content-location" not in response.headers:
            raise PullError(f"the export kick-off {url} answered {response.status_code}: {response.text[:300]}",
                            "source")
        return response.headers["content-location"]

    def manifest(self, status_url: str, progress: Callable[[str], None] | None = None) -> dict | None:
        """Poll until the export is done: its manifest (None when the job is gone: expired or unknown)."""
        for _ in range(MAX_POLLS):
            response = self._send("GET", status_url, headers={"Accept": "application/json"})
            if response.status_code == 200:
                return _json_object(response)
            if response.status_code in (404, 410):
                return None
            if response.status_code not in (202, 429, 503):
                raise PullError(f"the export at {status_url} failed: {response.status_code} {response.text[:300]}",
                                "source")
            if progress and response.headers.get("x-progress"):
                progress(response.headers["x-progress"])
            self.sleep(retry_after(response.headers.get("retry-after")))
        raise PullError(f"the export at {status_url} did not finish after {MAX_POLLS} polls", "source")

    def forget(self, status_url: str) -> None:
        """DELETE the finished job, so the source can drop its files (failures do not matter)."""
        with contextlib.suppress(httpx.HTTPError):
            self._send("DELETE", status_url)

    def download(self, url: str, target: Path, *, with_token: bool) -> Downloaded:
        """The file at ``url`` into ``target``, resuming a ``target.part`` left by an earlier run."""
        part = target.with_name(target.name + ".part")
        if target.is_file():
            return Downloaded(target, file_sha256(target), target.stat().st_size, target.stat().st_size)
        offset = part.stat().st_size if part.is_file() else 0
        headers = {"Accept": "application/fhir+ndjson"}
        headers |= {"Range": f"bytes={offset}-", "Accept-Encoding": "identity"} if offset else {"Accept-Encoding": "gzip"}
        with_token = with_token or self._files_want_token
        response = self._stream_to(url, part, headers, offset, with_token)
        if response == 401 and not with_token:  # Medplum-style: a listed URL that wants the token anyway
            self._files_want_token = True
            response = self._stream_to(url, part, headers, offset, True)
        if response == 416:  # nothing left to send: the part was complete
            response = 206
        if response not in (200, 206):
            raise PullError(f"downloading {url} answered {response}", "source")
        part.replace(target)
        return Downloaded(target, file_sha256(target), target.stat().st_size, offset if response == 206 else 0)

    def _stream_to(self, url: str, part: Path, headers: dict[str, str], offset: int, auth: bool) -> int:
        with self.http.stream("GET", url, headers={
            **headers, **({"Authorization": f"Bearer {self._token or self.authenticate()}"} if auth else {})},
        ) as response:
            if response.status_code == 206 and offset:
                mode = "ab"
            elif response.status_code == 200:
                mode = "wb"
            else:
                return response.status_code
            size = offset if mode == "ab" else 0
            with part.open(mode) as handle:
                for block in response.iter_bytes(CHUNK_BYTES):
                    size += len(block)
                    if size > self.max_file_bytes:
                        handle.close()
                        part.unlink(missing_ok=True)  # a rerun starts it again rather than resuming past the limit
                        raise PullError(f"{url} is larger than {self.max_file_bytes} bytes (FHIRFUS_PULL_MAX_FILE_BYTES)",
                                        "source")
                    handle.write(block)
            return response.status_code


def _json_object(response: httpx.Response) -> dict:
    """The JSON object a source answered (anything else is the source's error, said as such)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise PullError(f"{response.request.url} answered {response.status_code} without a JSON object", "source")
    return body


def retry_after(value: str | None) -> float:
    """Seconds to wait as the server asks (an integer; an HTTP date is not trusted), capped."""
    try:
        return min(MAX_POLL_SECONDS, max(0.05, float(value))) if value else 1.0
    except ValueError:
        return 1.0


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()
