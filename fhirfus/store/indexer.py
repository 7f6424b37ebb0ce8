"""Search-index rows, written in the same transaction as the resource they describe."""

from __future__ import annotations

from sqlalchemy import Connection


def index_resource(conn: Connection, pk: int, res_type: str, content: dict) -> None:
    """Replace the index rows of one resource."""


def remove_resource(conn: Connection, pk: int) -> None:
    """Drop the index rows of a deleted resource."""
