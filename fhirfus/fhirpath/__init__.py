"""The one FHIRPath layer, used by indexing, the ViewDefinition runner and the profiles' invariants.

- ``engine``: strict parsing and evaluation on fhirpathpy, with the SQL-on-FHIR functions;
- ``compiler``: the subset that views use, compiled from the parse tree to closures (``Unsupported``
  and ``Undecided`` send the rest back to the engine);
- ``paths``: search-parameter expressions, which are nearly all plain paths, compiled to direct
  lookups, with fhirpathpy behind them for the others.
"""
