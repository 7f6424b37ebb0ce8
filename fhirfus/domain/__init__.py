"""Clinical domain rules beyond the base FHIR spec: TWSTRS scoring, Questionnaire-driven answer checks.

The rules live in data under ``mappings/`` (Questionnaires, CodeSystems); this package reads them and
reports problems as ``fhirfus.fhir.errors.Issue`` so the API can answer 422 with an OperationOutcome.
"""
