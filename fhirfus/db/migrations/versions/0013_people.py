"""People accounts of the web console and their sessions.

- ``auth_people``: email, role, site, argon2id password hash, one-time setup token hash, optional TOTP secret.
- ``auth_person_sessions``: console sessions (hashed cookie token, CSRF token, expiry).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from fhirfus.db.types import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_people",
        sa.Column("person_id", sa.String(64), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("site", sa.String(64), nullable=True),
        sa.Column("password_hash", sa.Text, nullable=True),
        sa.Column("setup_hash", sa.String(64), nullable=True, unique=True),
        sa.Column("setup_expires_at", UTCDateTime, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("disabled_at", UTCDateTime, nullable=True),
        sa.Column("totp_secret", sa.String(64), nullable=True),
        sa.Column("totp_last_step", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "auth_person_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("person_id", sa.String(64), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_auth_person_sessions_person_id", "auth_person_sessions", ["person_id"])


def downgrade() -> None:
    op.drop_index("ix_auth_person_sessions_person_id", "auth_person_sessions")
    op.drop_table("auth_person_sessions")
    op.drop_table("auth_people")
