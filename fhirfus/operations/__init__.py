"""FHIR operations, one module per ``$operation`` (``$everything``, ``$extract``). Bulk ``$export``
lives in ``fhirfus.bulk`` and ``$analysis-export`` in ``fhirfus.analysis``.
"""
