"""Inbound mapping: site spreadsheets and REDCap exports → FHIR, driven by the YAML specs of
``fhirfus/ig/inbound``.
"""
