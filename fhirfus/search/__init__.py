"""Search query parsing: URL parameters → a typed ``SearchQuery`` (no SQL, no I/O)."""
