"""FHIR R4 knowledge without I/O: validation of structure, datatypes and required bindings, dates,
references, projections (``_elements``/``_summary``), value sets, the Patient compartment, and the
generated data files of ``data/`` (from the official definitions, by ``tools/gen_*.py``).
"""
