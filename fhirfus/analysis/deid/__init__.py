"""De-identification: policies (``fhirfus/ig/policies``), pseudonyms, day offsets, age bands, and
their application to the view rows before anything else sees them.
"""
