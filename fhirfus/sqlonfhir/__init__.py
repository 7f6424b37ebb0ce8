"""SQL on FHIR v2: the ViewDefinition runner (``runner``, every official test passes) and a compiled
fast path for the views it can compile (``fastpath``), falling back to the runner.
"""
