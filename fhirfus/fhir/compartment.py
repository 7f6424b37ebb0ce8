"""The Patient compartment (the official R4 CompartmentDefinition, generated into ``data/``).

A resource is in patient P's compartment when one of the compartment's reference parameters of
its type points at Patient/P; a Patient is in its own. ``$everything`` and Patient- and
Group-level Bulk export both read it from here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib.resources import files
from pathlib import Path

COMPARTMENT_FILE = Path(str(files(__package__ or "fhirfus.fhir"))) / "data" / "compartment_patient.json"

#: Types of the official compartment that are not part of a patient's record here: the audit
#: trail (who looked at the patient) is the server's, readable by admins only.
NOT_IN_RECORD = frozenset({"AuditEvent"})


@cache
def compartment() -> Mapping[str, tuple[str, ...]]:
    """Resource type → the reference parameters that put it in a Patient's compartment."""
    return {t: tuple(codes) for t, codes in json.loads(COMPARTMENT_FILE.read_text()).items()
            if codes and t not in NOT_IN_RECORD}
