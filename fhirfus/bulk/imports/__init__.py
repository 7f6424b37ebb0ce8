"""Bulk ``$import``: NDJSON files named by URL (or uploaded) loaded asynchronously, resumably."""
