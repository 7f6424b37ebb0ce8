"""The site that owns each resource id, on the current row and on every version.

Site confinement used to read the ``_security`` site label from the search index, which a delete
removes: a tombstone belonged to nobody, so its old versions could be read and its id taken over
by another site. ``site`` is written when an id is first used and never changed (tombstones
included), and every read filters on it (``fhirfus.db.visibility``).

Existing data: a version keeps the site of its own label; a version without one (a delete, data
of no site) takes the site of the version before it. The id's owner is the site of its newest
labelled version. An id taken over by another site before this revision (delete, then a PUT by
the other site) thus stays readable by its taker only, and the versions the first site wrote stay
that site's: neither reads the other's (each site's reads filter every version on its own site).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

SITE_SYSTEM = "https://fhirfus.org/fhir/CodeSystem/site"

_VERSION_LABEL = {
    "postgresql": """
        UPDATE resource_history SET site = (
            SELECT label->>'code' FROM jsonb_array_elements(content->'meta'->'security') AS label
            WHERE label->>'system' = :system LIMIT 1)
        WHERE jsonb_typeof(content->'meta'->'security') = 'array'
    """,
    "sqlite": """
        UPDATE resource_history SET site = (
            SELECT json_extract(label.value, '$.code') FROM json_each(content, '$.meta.security') AS label
            WHERE json_extract(label.value, '$.system') = :system LIMIT 1)
        WHERE json_type(content, '$.meta.security') = 'array'
    """,
}

_OWNER = """
    UPDATE resources SET site = (
        SELECT h.site FROM resource_history h
        WHERE h.res_type = resources.res_type AND h.res_id = resources.res_id AND h.site IS NOT NULL
        ORDER BY h.version DESC LIMIT 1)
"""

_UNLABELLED_VERSIONS = """
    UPDATE resource_history SET site = (
        SELECT h.site FROM resource_history h
        WHERE h.res_type = resource_history.res_type AND h.res_id = resource_history.res_id
          AND h.version < resource_history.version AND h.site IS NOT NULL
        ORDER BY h.version DESC LIMIT 1)
    WHERE site IS NULL
"""


def upgrade() -> None:
    op.add_column("resources", sa.Column("site", sa.String(64), nullable=True))
    op.add_column("resource_history", sa.Column("site", sa.String(64), nullable=True))
    bind = op.get_bind()
    bind.execute(sa.text(_VERSION_LABEL[bind.dialect.name]), {"system": SITE_SYSTEM})
    bind.execute(sa.text(_UNLABELLED_VERSIONS))
    bind.execute(sa.text(_OWNER))


def downgrade() -> None:
    with op.batch_alter_table("resource_history") as batch:
        batch.drop_column("site")
    with op.batch_alter_table("resources") as batch:
        batch.drop_column("site")
