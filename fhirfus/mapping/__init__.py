"""Inbound mapping: site spreadsheets and REDCap exports → FHIR, driven by YAML specs in ``mappings/inbound``."""
