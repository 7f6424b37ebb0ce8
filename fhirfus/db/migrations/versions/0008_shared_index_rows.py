"""Drop index rows that are now shared with another parameter.

A parameter whose expression contains another parameter's whole (Observation ``combo-code`` =
``code | component.code``; Patient ``phonetic`` = ``name``) no longer indexes those values itself:
a search by it reads the rows of both (``fhirfus.search.registry.stored_under``). The rows listed
here held nothing but such duplicates, so deleting them changes no search answer. The list is the
R4 parameters of that kind at this revision, written out so the migration does not change with
the code.

Downgrade cannot bring the rows back; run ``fhirfus reindex`` after downgrading past this revision.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

#: (index table, resource type, parameter) whose every row is also stored under another parameter.
REDUNDANT = (
    ("search_token", "CapabilityStatement", "version"),
    ("search_uri", "CodeSystem", "url"),
    ("search_token", "Observation", "combo-code"),
    ("search_token", "Observation", "combo-data-absent-reason"),
    ("search_token", "Observation", "combo-value-concept"),
    ("search_quantity", "Observation", "combo-value-quantity"),
    ("search_composite", "Observation", "combo-code-value-concept"),
    ("search_composite", "Observation", "combo-code-value-quantity"),
    ("search_string", "Patient", "phonetic"),
    ("search_string", "Person", "phonetic"),
    ("search_string", "Practitioner", "phonetic"),
    ("search_string", "RelatedPerson", "phonetic"),
)


def upgrade() -> None:
    for table, res_type, param in REDUNDANT:
        op.execute(
            sa.text(f"DELETE FROM {table} WHERE res_type = :res_type AND param = :param").bindparams(
                res_type=res_type, param=param
            )
        )


def downgrade() -> None:
    """Nothing to undo in the schema; the deleted rows come back with ``fhirfus reindex``."""
