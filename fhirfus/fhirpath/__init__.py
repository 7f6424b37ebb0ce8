"""FHIRPath: strict parsing and evaluation on fhirpathpy, with the SQL-on-FHIR functions."""
