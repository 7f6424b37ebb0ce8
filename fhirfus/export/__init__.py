"""Analytics export: flatten FHIR resources into tables (SQL on FHIR v2 ViewDefinitions)."""
