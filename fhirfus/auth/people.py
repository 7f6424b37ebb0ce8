"""People who use the web console: accounts, passwords, one-time setup links and sessions.

A person has the role and site model of a client (``site`` | ``analyst`` | ``admin``; a site person
names one site) and becomes an ``Access`` (``access_for``), so every confinement of the API
applies to the console unchanged. Passwords are argon2id hashes; a new account (or a reset) gets a
one-time setup token, valid for a limited time, of which only a SHA-256 is stored. Sessions are
random tokens kept in a cookie; the database stores their SHA-256 with the session's CSRF token,
so a copy of the table opens no session.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from fhirfus.auth import totp
from fhirfus.auth.access import ROLES, Access
from fhirfus.auth.scopes import Grant
from fhirfus.db.tables import auth_people, auth_person_sessions
from fhirfus.db.visibility import SITE_CODE, check_site_code
from fhirfus.errors import InvalidRequest, NotFound, Unauthorized
from fhirfus.store.repository import Store

#: argon2id with the library's defaults (RFC 9106 low-memory profile).
_HASHER = PasswordHasher()
SETUP_LIFETIME = timedelta(days=3)
SESSION_LIFETIME = timedelta(hours=8)
MIN_PASSWORD = 12
#: The longest address (RFC 3696's, the ``email`` column's width).
MAX_EMAIL = 320
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
#: What a person may do, by role: the scopes a client of that role is usually given.
_GRANTS = {"site": (Grant("*", "cruds"),), "admin": (Grant("*", "cruds"),), "analyst": (Grant("*", "rs"),)}


@dataclass(frozen=True)
class Person:
    person_id: str
    email: str
    role: str
    site: str | None
    has_password: bool
    created_at: datetime
    disabled_at: datetime | None = None
    has_totp: bool = False

    @property
    def enabled(self) -> bool:
        return self.disabled_at is None


@dataclass(frozen=True)
class Session:
    person: Person
    csrf: str


class LoginFailed(Unauthorized):
    """Wrong email or password, or a disabled account (one message for all: no account probing)."""

    def __init__(self) -> None:
        super().__init__("Email or password is wrong", "password")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _person(row) -> Person:
    return Person(row.person_id, row.email, row.role, row.site, row.password_hash is not None, row.created_at,
                  row.disabled_at, row.totp_secret is not None)


def access_for(person: Person) -> Access:
    """The caller a person is: ``person:<email>`` with the person's role and site."""
    return Access(f"person:{person.email}", person.role, person.site, _GRANTS[person.role])


def add_person(store: Store, email: str, role: str, site: str | None = None) -> tuple[Person, str]:
    """A new account and its one-time setup token (to be sent as a first-login link)."""
    email = email.strip().lower()
    if len(email) > MAX_EMAIL or not _EMAIL.match(email):
        raise InvalidRequest(f"'{email[:MAX_EMAIL]}' is not an email address", "email")
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", "role")
    if role == "site" and not site:
        raise InvalidRequest("a site person needs --site", "site")
    if role != "site" and site:
        raise InvalidRequest("only a site person names a site", "site")
    if site:
        check_site_code(site)
    token = secrets.token_urlsafe(32)
    now = _now()
    person_id = uuid.uuid4().hex
    try:
        with store.writing() as conn:
            conn.execute(insert(auth_people).values(
                person_id=person_id, email=email, role=role, site=site, password_hash=None,
                setup_hash=_digest(token), setup_expires_at=now + SETUP_LIFETIME, created_at=now))
    except IntegrityError as exc:
        raise InvalidRequest(f"a person with email '{email}' exists already", "email") from exc
    return Person(person_id, email, role, site, False, now), token


def reset_link_token(store: Store, email: str) -> str:
    """A new one-time setup token for an existing person (the old password stays until it is used)."""
    token = secrets.token_urlsafe(32)
    with store.writing() as conn:
        done = conn.execute(update(auth_people).where(auth_people.c.email == email.strip().lower()).values(
            setup_hash=_digest(token), setup_expires_at=_now() + SETUP_LIFETIME)).rowcount
    if not done:
        raise NotFound(f"no person with email '{email}'", "email")
    return token


def person_for_setup(store: Store, token: str) -> Person:
    """The person a setup token is for (401 when unknown, used or expired)."""
    with store.reading() as conn:
        row = conn.execute(select(auth_people).where(auth_people.c.setup_hash == _digest(token))).first()
    if row is None or row.setup_expires_at is None or row.setup_expires_at < _now() or row.disabled_at:
        raise Unauthorized("This link is unknown, used or expired; ask an administrator for a new one", "token")
    return _person(row)


def set_password(store: Store, token: str, password: str) -> Person:
    """Use a setup token: store the password's argon2id hash and forget the token."""
    person = person_for_setup(store, token)
    if len(password) < MIN_PASSWORD:
        raise InvalidRequest(f"the password needs at least {MIN_PASSWORD} characters", "password")
    if password.lower() == person.email:
        raise InvalidRequest("the password may not be the email address", "password")
    with store.writing() as conn:
        conn.execute(update(auth_people).where(auth_people.c.person_id == person.person_id).values(
            password_hash=_HASHER.hash(password), setup_hash=None, setup_expires_at=None))
        conn.execute(delete(auth_person_sessions).where(auth_person_sessions.c.person_id == person.person_id))
    return Person(person.person_id, person.email, person.role, person.site, True, person.created_at)


def authenticate(store: Store, email: str, password: str, code: str = "") -> Person:
    """The person with this email and password, and the current one-time code when they set up a
    second factor (``LoginFailed`` otherwise, after the same work)."""
    with store.reading() as conn:
        row = conn.execute(select(auth_people).where(auth_people.c.email == email.strip().lower())).first()
    stored = row.password_hash if row is not None and row.password_hash else None
    try:
        _HASHER.verify(stored or _DUMMY, password)
    except (VerificationError, InvalidHashError) as exc:
        raise LoginFailed() from exc
    if row is None or stored is None or row.disabled_at is not None:
        raise LoginFailed()
    if row.totp_secret is not None:
        _use_code(store, row.person_id, row.totp_secret, code)
    if _HASHER.check_needs_rehash(stored):
        with store.writing() as conn:
            conn.execute(update(auth_people).where(auth_people.c.person_id == row.person_id)
                         .values(password_hash=_HASHER.hash(password)))
    return _person(row)


def _use_code(store: Store, person_id: str, secret: str, code: str) -> None:
    """Accept a TOTP code once: its time step must be later than the last one accepted."""
    step = totp.matching_step(secret, code)
    if step is None:
        raise LoginFailed()
    with store.writing() as conn:
        used = conn.execute(update(auth_people).where(
            auth_people.c.person_id == person_id,
            (auth_people.c.totp_last_step.is_(None)) | (auth_people.c.totp_last_step < step),
        ).values(totp_last_step=step)).rowcount
    if not used:
        raise LoginFailed()


def enable_totp(store: Store, person: Person, secret: str, code: str) -> None:
    """Turn the second factor on once the person proves their app has ``secret`` (a current code)."""
    if totp.matching_step(secret, code) is None:
        raise InvalidRequest("That code does not match; check the phone's clock and type the current code", "code")
    with store.writing() as conn:
        conn.execute(update(auth_people).where(auth_people.c.person_id == person.person_id)
                     .values(totp_secret=secret, totp_last_step=totp.matching_step(secret, code)))


def disable_totp(store: Store, person: Person) -> None:
    with store.writing() as conn:
        conn.execute(update(auth_people).where(auth_people.c.person_id == person.person_id)
                     .values(totp_secret=None, totp_last_step=None))


class NotRegistered(Unauthorized):
    """An identity provider vouched for an email that has no console account (and none is opened)."""

    def __init__(self, email: str) -> None:
        super().__init__(f"There is no console account for {email}: an admin registers the email first "
                         "(People → Add), then logging in through the identity provider works", "email")


def provisioning(value: str | None) -> tuple[str, str | None] | None:
    """The role and site of accounts opened on a first identity-provider login
    (``FHIRFUS_OIDC_AUTO_PROVISION``: ``analyst`` or ``site:CODE``; unset: none is opened). An admin
    account is never opened this way: the provider says who a person is, not what they may do."""
    if not value:
        return None
    role, _, site = value.partition(":")
    if role == "analyst" and not site:
        return role, None
    if role == "site" and SITE_CODE.fullmatch(site):
        return role, site
    raise InvalidRequest(f"FHIRFUS_OIDC_AUTO_PROVISION must be 'analyst' or 'site:CODE', got '{value}'",
                         "FHIRFUS_OIDC_AUTO_PROVISION")


def person_for_email(store: Store, email: str, provision: tuple[str, str | None] | None = None) -> Person:
    """The enabled account of an email an identity provider vouched for. An unknown email gets an
    account of ``provision``'s role and site when given (``provisioning``), else ``NotRegistered``;
    a disabled account stays closed (``LoginFailed``)."""
    email = email.strip().lower()
    with store.reading() as conn:
        row = conn.execute(select(auth_people).where(auth_people.c.email == email)).first()
    if row is None and provision is not None:
        if not _EMAIL.match(email):
            raise NotRegistered(email)
        try:
            with store.writing() as conn:
                conn.execute(insert(auth_people).values(
                    person_id=uuid.uuid4().hex, email=email, role=provision[0], site=provision[1], password_hash=None,
                    setup_hash=None, setup_expires_at=None, created_at=_now()))
        except IntegrityError:
            pass  # opened by a login of the same person a moment ago
        with store.reading() as conn:
            row = conn.execute(select(auth_people).where(auth_people.c.email == email)).first()
    if row is None:
        raise NotRegistered(email)
    if row.disabled_at is not None:
        raise LoginFailed()
    return _person(row)


#: Verified when the email is unknown, so a wrong email costs the time of a wrong password.
_DUMMY = _HASHER.hash(secrets.token_hex(16))


def open_session(store: Store, person: Person) -> tuple[str, Session]:
    """A new session: (the cookie's token, the session with its CSRF token)."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = _now()
    with store.writing() as conn:
        conn.execute(delete(auth_person_sessions).where(auth_person_sessions.c.expires_at < now))
        conn.execute(insert(auth_person_sessions).values(
            token_hash=_digest(token), person_id=person.person_id, csrf=csrf, created_at=now,
            expires_at=now + SESSION_LIFETIME))
    return token, Session(person, csrf)


def session_for(store: Store, token: str | None) -> Session | None:
    """The live session of a cookie token, its person enabled (None otherwise)."""
    if not token:
        return None
    with store.reading() as conn:
        row = conn.execute(
            select(auth_person_sessions.c.csrf, auth_person_sessions.c.expires_at, auth_people)
            .join(auth_people, auth_people.c.person_id == auth_person_sessions.c.person_id)
            .where(auth_person_sessions.c.token_hash == _digest(token))).first()
    if row is None or row.expires_at < _now() or row.disabled_at is not None:
        return None
    return Session(_person(row), row.csrf)


def close_session(store: Store, token: str | None) -> None:
    if token:
        with store.writing() as conn:
            conn.execute(delete(auth_person_sessions).where(auth_person_sessions.c.token_hash == _digest(token)))


def list_people(store: Store) -> list[Person]:
    with store.reading() as conn:
        return [_person(r) for r in conn.execute(select(auth_people).order_by(auth_people.c.email))]


def set_enabled(store: Store, email: str, enabled: bool) -> None:
    """Disable (its sessions end) or enable a person."""
    with store.writing() as conn:
        rows = conn.execute(select(auth_people.c.person_id).where(auth_people.c.email == email.strip().lower())).all()
        if not rows:
            raise NotFound(f"no person with email '{email}'", "email")
        conn.execute(update(auth_people).where(auth_people.c.person_id == rows[0].person_id)
                     .values(disabled_at=None if enabled else _now()))
        if not enabled:
            conn.execute(delete(auth_person_sessions).where(auth_person_sessions.c.person_id == rows[0].person_id))
