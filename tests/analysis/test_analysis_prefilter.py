"""The export's in-process pre-filter dispatch agrees with PostgreSQL's JSONB containment, which
the views' pre-filters are written for."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import create_engine, text

from fhirfus.analysis.source import contains
from fhirfus.analysis.views import analysis_views
from fhirfus.settings import test_postgres_url as postgres_url

SCORE = {"resourceType": "Observation", "status": "final",
         "code": {"coding": [{"system": "http://loinc.org", "code": "x"},
                             {"system": "https://fhirfus.org/fhir/CodeSystem/twstrs", "code": "total"}]}}
PARAMETER = {"resourceType": "Observation", "status": "final",
             "code": {"coding": [{"system": "https://fhirfus.org/fhir/CodeSystem/sonication-parameter", "code": "power"}]}}
OTHERS = [{"code": {"coding": []}}, {"code": {"text": "no coding"}}, {"code": {"coding": {"system": "x"}}},
          {"code": [{"coding": [{"system": "https://fhirfus.org/fhir/CodeSystem/twstrs"}]}]}, {}]


@pytest.mark.parametrize("document", [SCORE, PARAMETER, *OTHERS])
def test_containment_matches_postgresql_for_every_views_prefilter(document: dict) -> None:
    patterns = [v.prefilter for v in analysis_views() if v.prefilter is not None]
    assert len(patterns) >= 2
    engine = create_engine(postgres_url())
    try:
        with engine.connect() as conn:
            for pattern in patterns:
                expected = conn.execute(text("SELECT CAST(:d AS jsonb) @> CAST(:p AS jsonb)"),
                                        {"d": json.dumps(document), "p": json.dumps(pattern)}).scalar_one()
                assert contains(document, pattern) is expected, (document, pattern)
    finally:
        engine.dispose()
