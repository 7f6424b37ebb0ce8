"""The access-token signing secret shared by every process of a deployment.

Access tokens are HS256 JWTs: a token one process issues must verify on every other process and
host. ``FHIRFUS_TOKEN_SECRET`` sets the secret; without it the first process to need one generates
it and stores it in the database (``auth_secrets``), and every other process reads that one. Who
can read the database can read the secret, as they could read every resource already.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import select

from fhirfus.db.engine import upsert_insert
from fhirfus.db.tables import auth_secrets
from fhirfus.store.repository import Store

ACCESS_TOKEN_SECRET = "access-token-hs256"


def shared_secret(store: Store, name: str = ACCESS_TOKEN_SECRET,
                  generate: Callable[[], str] = lambda: secrets.token_urlsafe(48)) -> str:
    """The deployment's secret called ``name``, generated and stored by the first caller."""
    query = select(auth_secrets.c.value).where(auth_secrets.c.name == name)
    with store.writing() as conn:  # two processes may race here: the first insert wins, both read it
        if conn.dialect.name == "postgresql":  # start-up work: not bound by the requests' statement time limit
            conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
        value = conn.execute(query).scalar_one_or_none()
        if value is not None:
            return value
        conn.execute(upsert_insert(conn, auth_secrets).values(name=name, value=generate(), created_at=datetime.now(UTC))
                     .on_conflict_do_nothing(index_elements=["name"]))
        return conn.execute(query).scalar_one()
