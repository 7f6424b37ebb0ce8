"""Data coming in: site files through declarative mappings (``fhirfus import``), Bundles and NDJSON
(``fhirfus load``), and the synthetic demo cohort (``fhirfus demo``).
"""
