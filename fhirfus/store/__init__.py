"""The versioned resource store: current versions, every version in history, tombstones,
optimistic locking, and the index kept in step on every write (``fhirfus.search.index``).
"""
