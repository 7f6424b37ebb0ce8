"""Storage: SQLAlchemy tables, engine, the versioned resource repository and the search index."""
