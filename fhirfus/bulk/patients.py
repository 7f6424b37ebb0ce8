"""The patients of a Patient- or Group-level export, staged in ``export_job_patients``.

Group members are read from the Group when the job starts (``member.entity`` references to
Patients; ``inactive`` members are no longer in the group). The ``patient`` parameter narrows the
set; patients that do not exist, or are not members of the group, are reported in the manifest's
error file rather than refused (Bulk Data v2, ``patient`` parameter).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, delete, insert, select

from fhirfus.bulk.params import ExportRequest
from fhirfus.db.tables import export_job_patients
from fhirfus.db.visibility import Visibility
from fhirfus.errors import Gone, NotFound
from fhirfus.store import repository

_BATCH = 1000


def group_members(conn: Connection, seen_by: Visibility, group_id: str, base_url: str) -> list[str]:
    """Ids of the Patients that are active members of the Group (404/410 when it is gone)."""
    stored = repository.current(conn, seen_by, "Group", group_id)
    if stored is None:
        raise NotFound(f"Group/{group_id} not found", "Group.id")
    if stored.deleted or stored.content is None:
        raise Gone(f"Group/{group_id} was deleted", "Group.id")
    members: list[str] = []
    for member in stored.content.get("member") or []:
        if not isinstance(member, dict) or member.get("inactive") is True:
            continue
        reference = (member.get("entity") or {}).get("reference")
        patient_id = patient_id_of(reference, base_url) if isinstance(reference, str) else None
        if patient_id is not None:
            members.append(patient_id)
    return list(dict.fromkeys(members))


def patient_id_of(reference: str, base_url: str) -> str | None:
    """``Patient/1``, ``Patient/1/_history/2`` or ``{base}/Patient/1`` → ``1``; anything else → None."""
    text = reference
    base = base_url.rstrip("/")
    if base and text.startswith(base + "/"):
        text = text[len(base) + 1:]
    parts = text.split("/")
    if len(parts) >= 2 and parts[0] == "Patient" and parts[1]:
        return parts[1]
    return None


def stage_patients(conn: Connection, job_id: str, request: ExportRequest) -> list[str]:
    """Write the job's patient set; the warnings for the manifest's error file."""
    warnings: list[str] = []
    if request.level == "group":
        assert request.group_id is not None
        members = group_members(conn, Visibility(request.site), request.group_id, request.base_url)
        if request.patients:
            member_set = set(members)
            for patient_id in request.patients:
                if patient_id not in member_set:
                    warnings.append(f"Patient/{patient_id} is not a member of Group/{request.group_id}; not exported")
            patients = [p for p in request.patients if p in member_set]
        else:
            patients = members
    else:
        patients = list(request.patients)
    live = _live_patients(conn, Visibility(request.site), patients)
    for patient_id in patients:
        if patient_id not in live:
            warnings.append(f"Patient/{patient_id} does not exist (or was deleted); not exported")
    conn.execute(delete(export_job_patients).where(export_job_patients.c.job_id == job_id))
    kept = [p for p in patients if p in live]
    for start in range(0, len(kept), _BATCH):
        conn.execute(
            insert(export_job_patients), [{"job_id": job_id, "patient_id": p} for p in kept[start:start + _BATCH]]
        )
    return warnings


def _live_patients(conn: Connection, seen_by: Visibility, ids: Iterable[str]) -> set[str]:
    """The ids of live Patients among ``ids`` (those the job's requester may see)."""
    wanted = list(ids)
    live: set[str] = set()
    resources = seen_by.resources()
    for start in range(0, len(wanted), _BATCH):
        chunk = wanted[start:start + _BATCH]
        live.update(
            conn.execute(
                select(resources.c.res_id).where(
                    resources.c.res_type == "Patient", resources.c.res_id.in_(chunk), resources.c.deleted.is_(False)
                )
            ).scalars()
        )
    return live
