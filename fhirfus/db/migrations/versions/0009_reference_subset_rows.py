"""Drop reference rows that are another reference parameter's rows of one target type.

Observation ``patient`` is ``Observation.subject.where(resolve() is Patient)``: its rows were exactly
the ``subject`` rows with ``target_type = 'Patient'``, and every read of ``patient`` now reads those
(``fhirfus.search.registry.reference_subset``), so deleting them changes no answer. The list is
the R4 parameters of that kind at this revision, written out so the migration does not change
with the code. Their ``:identifier`` rows (in ``search_token``) stay: they are still written.

Downgrade cannot bring the rows back; run ``fhirfus reindex`` after downgrading past this revision.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

#: (resource type, reference parameter) whose rows are all another parameter's rows of one type.
REDUNDANT = (
    ("Account", "patient"),
    ("Appointment", "location"),
    ("Appointment", "patient"),
    ("Appointment", "practitioner"),
    ("AppointmentResponse", "location"),
    ("AppointmentResponse", "patient"),
    ("AppointmentResponse", "practitioner"),
    ("Basic", "patient"),
    ("CarePlan", "patient"),
    ("CareTeam", "patient"),
    ("ChargeItem", "patient"),
    ("ClinicalImpression", "patient"),
    ("Communication", "patient"),
    ("CommunicationRequest", "patient"),
    ("Composition", "patient"),
    ("Condition", "patient"),
    ("Contract", "patient"),
    ("DeviceRequest", "patient"),
    ("DiagnosticReport", "patient"),
    ("DocumentManifest", "patient"),
    ("DocumentReference", "patient"),
    ("Encounter", "patient"),
    ("Encounter", "practitioner"),
    ("Flag", "patient"),
    ("Goal", "patient"),
    ("GuidanceResponse", "patient"),
    ("ImagingStudy", "patient"),
    ("Invoice", "patient"),
    ("List", "patient"),
    ("MeasureReport", "patient"),
    ("Media", "patient"),
    ("MedicationAdministration", "patient"),
    ("MedicationDispense", "patient"),
    ("MedicationRequest", "patient"),
    ("MedicationStatement", "patient"),
    ("Observation", "patient"),
    ("Person", "patient"),
    ("Person", "practitioner"),
    ("Person", "relatedperson"),
    ("Procedure", "patient"),
    ("Provenance", "patient"),
    ("QuestionnaireResponse", "patient"),
    ("RequestGroup", "patient"),
    ("RiskAssessment", "patient"),
    ("ServiceRequest", "patient"),
    ("Specimen", "patient"),
    ("Task", "patient"),
)


def upgrade() -> None:
    statement = sa.text("DELETE FROM search_reference WHERE res_type = :res_type AND param = :param")
    for res_type, param in REDUNDANT:
        op.execute(statement.bindparams(res_type=res_type, param=param))


def downgrade() -> None:
    """Nothing to undo in the schema; the deleted rows come back with ``fhirfus reindex``."""
