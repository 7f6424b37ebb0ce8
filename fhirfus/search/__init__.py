"""Search, both sides of every parameter type: the registry (official R4 parameters and the guide's
own), extraction of index values on write, the index rows, query parsing, and the SQL a query
compiles to. Execution against a connection is ``fhirfus.interactions.search``.
"""
