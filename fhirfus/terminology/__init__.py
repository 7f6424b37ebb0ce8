"""The one terminology layer: code systems, value sets and concept maps, for search (``:in``,
``:not-in``), validation (the guide's profiles) and the terminology operations.

- ``sources``: where a canonical resource comes from — registered, the guide's ``terminology/``
  folder, the resources stored on the server (a lookup the caller passes in), the R4 value sets of
  required bindings;
- ``expansion``: a value set's codes per system (``:in``), and its concepts with displays
  (``$expand``, ``ValueSet/$validate-code``);
- ``codesystems``: one code of a system — ``$lookup``, ``$subsumes``, ``CodeSystem/$validate-code``;
- ``conceptmaps``: ``$translate``;
- ``capabilities``: the TerminologyCapabilities statement.

Pure: no I/O beyond the guide's files; errors are ``TerminologyError``s the operations turn into
OperationOutcomes.
"""
