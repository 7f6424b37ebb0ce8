"""Disclosure control of the published figures: small cells are suppressed everywhere.

A cell is a block of statistics.json with a count ``n`` (or, for a group of the baseline → last
summary, ``patients``); when 0 < n < the policy's minimum (its
``min_k``: 1 under ``safe-harbor``, 5 under ``safe-harbor-pooled``), the count and every number
derived from it become ``null`` and the block is marked ``"suppressed": true``. The paths of the
suppressed cells are listed so that the report can say where. Labels (strings) are kept.
"""

from __future__ import annotations

from typing import Any

#: Parts of statistics.json that are not tables of patients (nothing to suppress there).
NOT_CELLS = frozenset({"plan", "deidentification", "disclosure", "model", "provenance"})


def _blank(block: Any) -> Any:
    if isinstance(block, dict):
        return {k: (v if k in ("method", "step", "a", "b", "term") else _blank(v)) for k, v in block.items()}
    if isinstance(block, list):
        return [_blank(v) for v in block]
    if isinstance(block, (bool, str)):
        return block
    return None


def suppress(block: Any, minimum: int, path: str, where: list[str]) -> Any:
    """``block`` with its small cells suppressed (recorded in ``where``)."""
    if isinstance(block, dict):
        n = block.get("n", block.get("patients"))  # "patients": the summary's per-target groups
        if isinstance(n, int) and not isinstance(n, bool) and 0 < n < minimum:
            where.append(path)
            return {**_blank(block), "suppressed": True}
        return {k: suppress(v, minimum, f"{path}.{k}" if path else k, where) for k, v in block.items()}
    if isinstance(block, list):
        return [suppress(v, minimum, f"{path}[{i}]", where) for i, v in enumerate(block)]
    return block


def apply_disclosure_control(statistics: dict[str, Any], minimum: int) -> dict[str, Any]:
    """Suppress every small cell of ``statistics`` in place; add ``disclosure`` saying where."""
    where: list[str] = []
    if minimum > 1:
        for key in list(statistics):
            if key not in NOT_CELLS:
                statistics[key] = suppress(statistics[key], minimum, key, where)
    statistics["disclosure"] = {"min_cell": minimum, "suppressed_cells": len(where), "suppressed": where}
    return statistics
