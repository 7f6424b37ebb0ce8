"""The token endpoint under attack: every malformed request or assertion gets a 4xx with the RFC 6749
error and a description naming the problem, never a 5xx (SQLite and PostgreSQL, over HTTP)."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import random
import time
import uuid
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from auth_helpers import ASSERTION_TYPE, DROP, TestClient, b64url, jws, make_client, new_key, public_jwk
from conftest import serving
from cryptography.hazmat.primitives import serialization

from fhirfus.auth.clients import register
from fhirfus.db import migrate
from fhirfus.settings import Settings
from fhirfus.store.repository import Store

FORM = "send the parameters as an application/x-www-form-urlencoded form"


@pytest.fixture(scope="module")
def token_url(secure_server) -> str:
    return secure_server.root + "/auth/token"


@pytest.fixture(scope="module")
def store(secure_server) -> Store:
    return Store(secure_server.database.engine)


@pytest.fixture(scope="module")
def client(store, token_url) -> TestClient:
    return make_client(store, token_url, role="admin", scope="system/*.rs")


def refused(response: httpx.Response, status: int, error: str, description: str) -> None:
    """The response is an RFC 6749 error of ``status`` whose description contains ``description``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    assert description in body["error_description"], body
    assert response.headers["Cache-Control"] == "no-store"


def post_assertion(client: TestClient, assertion: str) -> httpx.Response:
    return httpx.post(client.token_url, data=client.form(assertion), timeout=30)


# --- claims of the wrong type, missing claims -------------------------------------------------

WRONG_TYPES = {
    "exp-numeric-string": ({"exp": str(int(time.time()) + 240)}, "exp must be a number"),
    "exp-boolean": ({"exp": True}, "exp must be a number"),
    "exp-object": ({"exp": {"value": 1}}, "exp must be a number"),
    "iat-string": ({"iat": str(int(time.time()))}, "iat must be a number"),
    "nbf-string": ({"nbf": str(int(time.time()))}, "nbf must be a number"),
    "nbf-list": ({"nbf": [1]}, "nbf must be a number"),
    "iss-number": ({"iss": 42}, "iss must be a string"),
    "iss-object": ({"iss": {"id": "x"}}, "iss must be a string"),
    "sub-number": ({"sub": 42}, "sub must be a string"),
    "sub-object": ({"sub": {"id": "x"}}, "sub must be a string"),
    "jti-number": ({"jti": 42}, "jti must be a string"),
    "jti-object": ({"jti": {"id": "x"}}, "jti must be a string"),
    "jti-empty": ({"jti": ""}, "jti is empty"),
    "jti-too-long": ({"jti": "j" * 201}, "jti is longer than 200 characters"),
    "aud-number": ({"aud": 7}, "aud must be a string or a non-empty list of strings"),
    "aud-object": ({"aud": {"url": "x"}}, "aud must be a string or a non-empty list of strings"),
    "aud-list-of-numbers": ({"aud": [7]}, "aud must be a string or a non-empty list of strings"),
    "aud-empty-list": ({"aud": []}, "aud must be a string or a non-empty list of strings"),
}


@pytest.mark.parametrize("case", list(WRONG_TYPES))
def test_claim_of_the_wrong_type_is_invalid_client(client, case: str) -> None:
    overrides, description = WRONG_TYPES[case]
    refused(post_assertion(client, client.signed(client.claims(**overrides))), 401, "invalid_client", description)


@pytest.mark.parametrize("claim", ["iss", "sub", "aud", "exp", "jti"])
def test_missing_claim_is_named(client, claim: str) -> None:
    assertion = client.signed(client.claims(**{claim: DROP}))
    refused(post_assertion(client, assertion), 401, "invalid_client", f"{claim} is missing")


def test_iss_and_sub_must_both_name_a_known_client(client) -> None:
    assertion = client.signed(client.claims(sub="someone-else"))
    refused(post_assertion(client, assertion), 401, "invalid_client",
            f"iss and sub must both be the client_id (iss '{client.client_id}', sub 'someone-else')")
    stranger = str(uuid.uuid4())
    assertion = client.signed(client.claims(iss=stranger, sub=stranger))
    refused(post_assertion(client, assertion), 401, "invalid_client", f"unknown client '{stranger}'")


def test_client_id_parameter_must_name_the_issuer(client) -> None:
    response = httpx.post(client.token_url, data=client.form(client_id="another"), timeout=30)
    refused(response, 401, "invalid_client", "client_id 'another' is not the assertion's iss")


# --- claim values -------------------------------------------------------------------------------


def test_expired_assertion_is_refused(client) -> None:
    assertion = client.signed(client.claims(exp=int(time.time()) - 30))
    refused(post_assertion(client, assertion), 401, "invalid_client", "client_assertion has expired (exp is 3")


def test_exp_too_far_ahead_is_refused(client) -> None:
    for exp in (int(time.time()) + 301 + 5, 1e300):
        assertion = client.signed(client.claims(exp=exp))
        refused(post_assertion(client, assertion), 401, "invalid_client", "exp is more than 5 minutes ahead (")
    # fractional times are numbers too
    response = post_assertion(client, client.signed(client.claims(exp=time.time() + 200.5, iat=time.time())))
    assert response.status_code == 200, response.text


def test_nbf_in_the_future_is_refused(client) -> None:
    assertion = client.signed(client.claims(nbf=int(time.time()) + 200))
    refused(post_assertion(client, assertion), 401, "invalid_client", "not valid yet (nbf")


def test_iat_in_the_future_is_refused(client) -> None:
    assertion = client.signed(client.claims(iat=int(time.time()) + 200))
    refused(post_assertion(client, assertion), 401, "invalid_client", "iat is")


def test_wrong_audience_is_named(client) -> None:
    for aud in ("https://elsewhere.example/token", ["https://elsewhere.example/token"]):
        assertion = client.signed(client.claims(aud=aud))
        refused(post_assertion(client, assertion), 401, "invalid_client",
                f"aud must be the token endpoint {client.token_url}")
    # RFC 7519: aud may be a list, it then has to hold the token endpoint
    response = post_assertion(client, client.signed(client.claims(aud=["https://other.example", client.token_url])))
    assert response.status_code == 200, response.text


# --- header: kid and alg --------------------------------------------------------------------------


def test_unknown_kid_is_refused(client) -> None:
    refused(post_assertion(client, client.signed(kid="no-such-key")), 401, "invalid_client",
            "kid 'no-such-key' names no key of this client")
    # a client with a single key may leave kid out
    assert post_assertion(client, client.signed(kid=DROP)).status_code == 200


def test_kid_of_another_clients_key_is_refused(client, store, token_url) -> None:
    other = make_client(store, token_url, role="admin", scope="system/*.rs")
    forged = jws({"alg": "RS384", "kid": other.kid}, client.claims(), other.key, "RS384")
    refused(post_assertion(client, forged), 401, "invalid_client", f"kid '{other.kid}' names no key of this client")


def test_kid_of_the_wrong_type_is_refused(client) -> None:
    refused(post_assertion(client, client.signed(kid=17)), 401, "invalid_client", "kid must be a string")


def test_signature_by_another_key_does_not_verify(client) -> None:
    forged = jws({"alg": "RS384", "kid": client.kid}, client.claims(), new_key("RS384"), "RS384")
    refused(post_assertion(client, forged), 401, "invalid_client", f"signature does not verify with key '{client.kid}'")


def test_alg_none_is_refused(client) -> None:
    unsigned = jws({"alg": "none", "kid": client.kid}, client.claims(), None, "none")
    refused(post_assertion(client, unsigned), 401, "invalid_client", "alg 'none' is not accepted")


def test_missing_alg_is_refused(client) -> None:
    refused(post_assertion(client, client.signed(alg=DROP)), 401, "invalid_client", "alg is missing")


def _hs256(header: dict, claims: dict, secret: bytes) -> str:
    signing_input = f"{b64url(orjson.dumps(header))}.{b64url(orjson.dumps(claims))}"
    return f"{signing_input}.{b64url(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def test_hs256_signed_with_the_public_key_pem_is_refused(client) -> None:
    pem = client.key.public_key().public_bytes(serialization.Encoding.PEM,  # type: ignore[attr-defined]
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    forged = _hs256({"alg": "HS256", "kid": client.kid}, client.claims(), pem)
    refused(post_assertion(client, forged), 401, "invalid_client", "alg 'HS256' is not accepted")


def test_hs256_signed_with_the_public_jwk_is_refused(client) -> None:
    secret = orjson.dumps(public_jwk(client.key, client.kid, "RS384"))
    forged = _hs256({"alg": "HS256", "kid": client.kid}, client.claims(), secret)
    refused(post_assertion(client, forged), 401, "invalid_client", "alg 'HS256' is not accepted")


def test_rs256_instead_of_rs384_is_refused(client) -> None:
    assertion = jws({"alg": "RS256", "kid": client.kid}, client.claims(), client.key, "RS256")
    refused(post_assertion(client, assertion), 401, "invalid_client", "alg 'RS256' is not accepted")


def test_key_registered_for_es384_cannot_verify_rs384(store, token_url) -> None:
    ec_client = make_client(store, token_url, role="admin", scope="system/*.rs", algorithm="ES384")
    forged = jws({"alg": "RS384", "kid": ec_client.kid}, ec_client.claims(), new_key("RS384"), "RS384")
    refused(post_assertion(ec_client, forged), 401, "invalid_client",
            f"alg 'RS384' does not match key '{ec_client.kid}', which is registered for ES384")


def _two_key_client(store: Store, token_url: str) -> tuple[TestClient, TestClient]:
    rsa_key, ec_key = new_key("RS384"), new_key("ES384")
    registered = register(store, "two keys", "admin", "system/*.rs",
                          {"keys": [public_jwk(rsa_key, "r1", "RS384"), public_jwk(ec_key, "e1", "ES384")]})
    return (TestClient(registered.client_id, rsa_key, "RS384", "r1", token_url, "system/*.rs"),
            TestClient(registered.client_id, ec_key, "ES384", "e1", token_url, "system/*.rs"))


def test_kid_is_required_when_the_client_has_several_keys(store, token_url) -> None:
    by_rsa, by_ec = _two_key_client(store, token_url)
    refused(post_assertion(by_rsa, by_rsa.signed(kid=DROP)), 401, "invalid_client",
            "kid is missing: this client has 2 keys")
    assert post_assertion(by_rsa, by_rsa.signed()).status_code == 200
    assert post_assertion(by_ec, by_ec.signed()).status_code == 200


def test_crit_header_is_refused(client) -> None:
    refused(post_assertion(client, client.signed(crit=["exp"])), 401, "invalid_client",
            "crit header parameters are not supported")


# --- not a JWT at all ---------------------------------------------------------------------------

RS384_HEADER = b64url(b'{"alg":"RS384"}')
NOT_JWTS = {
    "one-part": ("abc", "is not a JWT (three base64url parts"),
    "two-parts": ("abc.def", "is not a JWT (three base64url parts"),
    "four-parts": ("a.b.c.d", "is not a JWT (three base64url parts"),
    "header-not-base64url": ("a+b.e30.", "header is not base64url"),
    "header-not-json": (b64url(b"not json") + ".e30.", "header is not JSON"),
    "header-a-list": (b64url(b"[1]") + ".e30.", "header is not a JSON object"),
    "payload-a-string": (RS384_HEADER + "." + b64url(b'"x"') + ".", "payload is not a JSON object"),
    "payload-huge-integer": (RS384_HEADER + "." + b64url(b'{"exp":' + b"9" * 400 + b"}") + ".", "payload is not JSON"),
    "signature-not-base64url": (RS384_HEADER + ".e30.%%%", "signature is not base64url"),
}


@pytest.mark.parametrize("case", list(NOT_JWTS))
def test_assertion_that_is_not_a_jwt_is_refused(client, case: str) -> None:
    assertion, description = NOT_JWTS[case]
    refused(post_assertion(client, assertion), 401, "invalid_client", description)


def test_mangled_assertions_never_get_a_server_error(client) -> None:
    """Random mutations of a valid assertion (flipped characters, cut parts, claims of random types)."""
    rng = random.Random(20261202)
    values = [None, True, 0, -1, 1.5, 1e308, "", "x", "1700000000", [], ["x"], {}, {"a": 1}, "\u0000"]
    statuses = []
    for _ in range(120):
        kind = rng.randrange(3)
        if kind == 0:
            text = list(client.assertion())
            # distinct places, each given another character: a character put back as it was is no mangling
            for at in rng.sample(range(len(text)), rng.randint(1, 4)):
                text[at] = rng.choice([c for c in "AZaz09-_.=+/ %" if c != text[at]])
            assertion = "".join(text)
        elif kind == 1:
            assertion = client.assertion()[: rng.randrange(1, 400)]
        else:
            claims = client.claims()
            for name in rng.sample(["iss", "sub", "aud", "exp", "iat", "nbf", "jti"], rng.randint(1, 3)):
                claims[name] = rng.choice(values)
            assertion = client.signed(claims, kid=rng.choice([client.kid, None, 5, "x"]))
        response = post_assertion(client, assertion)
        statuses.append(response.status_code)
        assert 400 <= response.status_code < 500, (assertion, response.text)
        assert response.json()["error"] in ("invalid_client", "invalid_request"), response.text
    assert 401 in statuses


# --- the request itself ---------------------------------------------------------------------------


def test_json_body_is_told_to_send_a_form(client) -> None:
    response = httpx.post(client.token_url, json=client.form(), timeout=30)
    refused(response, 400, "invalid_request", FORM)
    # the same parameters as a form are accepted, with or without a charset
    body = str(httpx.QueryParams(client.form())).encode()
    response = httpx.post(client.token_url, content=body, timeout=30,
                          headers={"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("content_type", ["text/plain", "multipart/form-data; boundary=x", None])
def test_wrong_content_type_is_invalid_request(client, content_type: str | None) -> None:
    body = str(httpx.QueryParams(client.form())).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    response = httpx.post(client.token_url, content=body, headers=headers, timeout=30)
    refused(response, 400, "invalid_request", FORM)


@pytest.mark.parametrize("field", ["grant_type", "client_assertion_type", "client_assertion"])
def test_missing_form_field_is_invalid_request(client, field: str) -> None:
    response = httpx.post(client.token_url, data=client.form(**{field: DROP}), timeout=30)
    refused(response, 400, "invalid_request", f"{field} is missing")


def test_missing_or_unsupported_scope_is_invalid_scope(client) -> None:
    refused(httpx.post(client.token_url, data=client.form(scope=DROP), timeout=30), 400, "invalid_scope",
            "scope is missing")
    refused(httpx.post(client.token_url, data=client.form(scope="patient/*.read"), timeout=30), 400,
            "invalid_scope", "patient/*.read")


def test_other_grant_type_is_unsupported_grant_type(client) -> None:
    response = httpx.post(client.token_url, data=client.form(grant_type="password"), timeout=30)
    refused(response, 400, "unsupported_grant_type", "grant_type 'password' is not supported")


def test_other_client_assertion_type_is_invalid_client(client) -> None:
    response = httpx.post(client.token_url, data=client.form(client_assertion_type="urn:other"), timeout=30)
    refused(response, 401, "invalid_client", f"client_assertion_type must be {ASSERTION_TYPE}")


def test_repeated_parameter_is_invalid_request(client) -> None:
    body = str(httpx.QueryParams(client.form())) + "&grant_type=client_credentials"
    response = httpx.post(client.token_url, content=body.encode(), timeout=30,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    refused(response, 400, "invalid_request", "grant_type is repeated")


def test_form_that_is_not_utf8_is_invalid_request(client) -> None:
    response = httpx.post(client.token_url, content=b"grant_type=%FF%FE&scope=x", timeout=30,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    refused(response, 400, "invalid_request", "the form cannot be read")


def test_second_authentication_method_is_invalid_request(client) -> None:
    response = httpx.post(client.token_url, data=client.form(client_secret="s3cret"), timeout=30)
    refused(response, 400, "invalid_request", "authenticate with client_assertion only")
    response = httpx.post(client.token_url, data=client.form(), auth=("id", "secret"), timeout=30)
    refused(response, 400, "invalid_request", "authenticate with client_assertion only")


def test_overlong_assertion_is_invalid_request(client) -> None:
    response = httpx.post(client.token_url, data=client.form("a" * 20_000), timeout=30)
    refused(response, 400, "invalid_request", "client_assertion is longer than")


def _raw_post(url: str, headers: dict[str, str], chunks: list[bytes]) -> tuple[int, dict]:
    """POST with headers and body chunks written as given; the server may answer before they end."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest("POST", parts.path)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        for chunk in chunks:
            conn.send(chunk)
        response = conn.getresponse()
        return response.status, orjson.loads(response.read())
    finally:
        conn.close()


def test_oversized_body_is_refused_before_it_is_read(client) -> None:
    """17 MiB declared (the limit is 16 MiB): 413 without waiting for a byte of the body."""
    status, body = _raw_post(client.token_url, {"Content-Type": "application/x-www-form-urlencoded",
                                                "Content-Length": str(17 * 1024 * 1024)}, [])
    assert status == 413 and body["error"] == "invalid_request", body
    assert "exceeds the limit of 16777216 bytes" in body["error_description"]


def test_oversized_chunked_body_is_refused_once_past_the_limit(client) -> None:
    """No length declared: the body is read as it comes and refused once past the limit (the
    request's end never comes)."""
    mib = b"a" * (1024 * 1024)
    chunks = [b"%x\r\n%s\r\n" % (len(mib), mib)] * 16 + [b"1\r\na\r\n"]
    status, body = _raw_post(client.token_url, {"Content-Type": "application/x-www-form-urlencoded",
                                                "Transfer-Encoding": "chunked"}, chunks)
    assert status == 413 and body["error"] == "invalid_request", body
    assert "exceeds the limit" in body["error_description"]


# --- rate limits ------------------------------------------------------------------------------------


@pytest.fixture
def fresh_store(fresh_database) -> Store:
    """A database of the test's own: rate-limit counts per remote address are shared by a deployment."""
    migrate.upgrade(fresh_database.engine)
    return Store(fresh_database.engine)


def _limited(fresh_database, **limits: int) -> Settings:
    return Settings(database_url=fresh_database.url, auth="smart", token_secret="t" * 32, **limits)


def test_token_requests_per_client_are_limited(fresh_database, fresh_store) -> None:
    with serving(_limited(fresh_database, token_rate_limit_per_minute=2), fresh_store) as (root, _):
        first = make_client(fresh_store, root + "/auth/token", role="admin", scope="system/*.rs")
        second = make_client(fresh_store, root + "/auth/token", role="admin", scope="system/*.rs")
        assert [first.token_request().status_code for _ in range(2)] == [200, 200]
        response = first.token_request()
        refused(response, 429, "temporarily_unavailable", f"too many token requests from client '{first.client_id}'")
        assert int(response.headers["Retry-After"]) >= 1
        assert second.token_request().status_code == 200  # each client has its own count
        # an assertion that does not verify is not counted against the client it names
        forged = jws({"alg": "RS384", "kid": second.kid}, second.claims(), new_key(), "RS384")
        assert [post_assertion(second, forged).status_code for _ in range(3)] == [401, 401, 401]
        assert second.token_request().status_code == 200


def test_token_requests_per_address_are_limited(fresh_database, fresh_store) -> None:
    with serving(_limited(fresh_database, token_rate_limit_per_address=3), fresh_store) as (root, _):
        client = make_client(fresh_store, root + "/auth/token", role="admin", scope="system/*.rs")
        assert client.token_request().status_code == 200
        garbage = [httpx.post(root + "/auth/token", json={}, timeout=30).status_code for _ in range(2)]
        assert garbage == [400, 400]  # malformed requests count too: this is the brute-force guard
        response = client.token_request()
        refused(response, 429, "temporarily_unavailable", "too many token requests from 127.0.0.1")
        assert int(response.headers["Retry-After"]) >= 1


def test_unreachable_redis_is_503_not_500(fresh_database, fresh_store) -> None:
    settings = _limited(fresh_database, token_rate_limit_per_address=100)
    settings = Settings(**{**settings.__dict__, "redis_url": "redis://127.0.0.1:9/0"})  # port 9: nobody listens
    with serving(settings, fresh_store) as (root, _):
        client = make_client(fresh_store, root + "/auth/token", role="admin", scope="system/*.rs")
        response = client.token_request()
        refused(response, 503, "temporarily_unavailable", "rate-limit counts are not available")
