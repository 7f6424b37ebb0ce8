"""FHIR interactions and operations: the layer between HTTP (``fhirfus.api``) and ``fhirfus.store``.

Nothing here knows about HTTP requests; everything here raises typed ``FhirError``s.
"""
