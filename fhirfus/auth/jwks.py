"""Client public keys: which keys of a JWKS may verify a client assertion, and with which algorithm.

SMART Backend Services signs client assertions RS384 or ES384. A key's algorithm is its JWK
``alg`` when given, else follows from its type (RSA → RS384, EC P-384 → ES384), and an assertion
is verified only with the one algorithm its key is registered for: no key can be used under
another algorithm (an RSA public key as an HMAC secret, an ES384 key for RS384).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import Algorithm, get_default_algorithms
from jwt.exceptions import PyJWTError

ALGORITHMS = ("RS384", "ES384")
_KEY_TYPE = {"RS384": "RSA", "ES384": "EC"}
_ALGORITHM_OF_TYPE = {"RSA": "RS384", "EC": "ES384"}
_VERIFIERS: dict[str, Algorithm] = {name: get_default_algorithms()[name] for name in ALGORITHMS}
MIN_RSA_BITS = 2048
#: JWK members that belong to a private or symmetric key: never to be registered.
_SECRET_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
MAX_KEYS = 50


class InvalidJwks(ValueError):
    """A JWKS or one of its keys cannot be used to verify client assertions (the message says why)."""


@dataclass(frozen=True)
class VerificationKey:
    kid: str | None
    alg: str
    public_key: Any = field(repr=False)

    @property
    def name(self) -> str:
        return f"'{self.kid}'" if self.kid is not None else "(without kid)"

    def verifies(self, signing_input: bytes, signature: bytes) -> bool:
        try:
            return bool(_VERIFIERS[self.alg].verify(signing_input, self.public_key, signature))
        except (ValueError, TypeError, PyJWTError):
            return False


@dataclass(frozen=True)
class KeySet:
    """The usable keys of a client; ``unusable`` says why a named key was left out (kid → reason)."""

    keys: tuple[VerificationKey, ...]
    unusable: dict[str, str] = field(default_factory=dict)

    def by_kid(self, kid: str) -> VerificationKey | None:
        return next((k for k in self.keys if k.kid == kid), None)


def verification_key(jwk: Any) -> VerificationKey:
    """The key a JWK describes, or ``InvalidJwks`` naming what is wrong with it."""
    if not isinstance(jwk, dict):
        raise InvalidJwks("a key must be a JSON object")
    kid = jwk.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid):
        raise InvalidJwks("kid must be a non-empty string")
    name = f"key '{kid}'" if kid else "a key without kid"
    if any(member in jwk for member in _SECRET_MEMBERS):
        raise InvalidJwks(f"{name} holds private or secret key material: register the public key only")
    if jwk.get("use", "sig") != "sig":
        raise InvalidJwks(f"{name} has use '{jwk.get('use')}', not 'sig'")
    operations = jwk.get("key_ops")
    if operations is not None and (not isinstance(operations, list) or "verify" not in operations):
        raise InvalidJwks(f"{name} has key_ops without 'verify'")
    kty = jwk.get("kty")
    if kty not in _ALGORITHM_OF_TYPE:
        raise InvalidJwks(f"{name} has kty {kty!r}: client assertions are signed with RSA or EC P-384 keys")
    alg = jwk.get("alg", _ALGORITHM_OF_TYPE[kty])
    if alg not in ALGORITHMS:
        raise InvalidJwks(f"{name} is registered for alg {alg!r}: fhirfus accepts {' or '.join(ALGORITHMS)}")
    if _KEY_TYPE[alg] != kty:
        raise InvalidJwks(f"{name} is an {kty} key but registered for {alg}")
    if kty == "EC" and jwk.get("crv") != "P-384":
        raise InvalidJwks(f"{name} is on curve {jwk.get('crv')!r}: ES384 needs P-384")
    try:
        public_key = _VERIFIERS[alg].from_jwk(jwk)
    except (ValueError, TypeError, KeyError, PyJWTError) as exc:
        raise InvalidJwks(f"{name} cannot be read: {exc}") from exc
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size < MIN_RSA_BITS:
        raise InvalidJwks(f"{name} has {public_key.key_size} bits: RSA keys need at least {MIN_RSA_BITS}")
    if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise InvalidJwks(f"{name} is not a public key")
    return VerificationKey(kid, alg, public_key)


def _keys_of(jwks: Any) -> list[Any]:
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise InvalidJwks('a JWKS is a JSON object {"keys": [...]}')
    if len(jwks["keys"]) > MAX_KEYS:
        raise InvalidJwks(f"a JWKS of more than {MAX_KEYS} keys is not accepted")
    return jwks["keys"]


def registered_key_set(jwks: Any) -> KeySet:
    """A JWKS being registered: every key must be usable, and several keys each need a distinct kid
    (an assertion then names its key; see ``fhirfus.auth.assertion``)."""
    keys = [verification_key(jwk) for jwk in _keys_of(jwks)]
    if not keys:
        raise InvalidJwks("the JWKS must hold at least one public key")
    kids = [k.kid for k in keys]
    if len(keys) > 1 and (None in kids or len(set(kids)) != len(kids)):
        raise InvalidJwks("a JWKS of several keys needs a distinct kid on every key")
    return KeySet(tuple(keys))


def published_key_set(jwks: Any) -> KeySet:
    """A JWKS a client publishes at its ``jwks_url``: keys fhirfus cannot use (encryption keys,
    other algorithms) are left out, as a client may publish them for other servers."""
    usable: list[VerificationKey] = []
    unusable: dict[str, str] = {}
    for jwk in _keys_of(jwks):
        try:
            usable.append(verification_key(jwk))
        except InvalidJwks as exc:
            kid = jwk.get("kid") if isinstance(jwk, dict) else None
            if isinstance(kid, str):
                unusable[kid] = str(exc)
    return KeySet(tuple(usable), unusable)
