"""FHIR Bulk Data Access v2 ``$export``: parameters, selection in SQL, jobs in the database, the
worker that runs them, NDJSON files, and the operator's ``fhirfus export bulk``.
"""
