"""fhirfus — a FHIR R4 server for MRgFUS cervical-dystonia research."""

__version__ = "0.1.0"
FHIR_VERSION = "4.0.1"
