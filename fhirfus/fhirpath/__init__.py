"""The one FHIRPath layer: search-parameter paths compiled to direct lookups with fhirpathpy behind
them (``paths``), strict parsing and evaluation with the SQL-on-FHIR functions (``engine``). Used by
indexing, the ViewDefinition runner and the profiles' invariants.
"""
