"""Disclosure control of the published figures: small cells are suppressed everywhere.

A cell is a block of statistics.json with a count ``n`` (or, for a group of the baseline → last
summary, ``patients``); when 0 < n < the policy's minimum (its
``min_k``: 1 under ``safe-harbor``, 5 under ``safe-harbor-pooled``), the count and every number
derived from it become ``null`` and the block is marked ``"suppressed": true``. Where sibling counts
(the sexes, age bands, severities of one group) would let a single suppressed cell be recovered
from the group's total, the smallest other one is suppressed too. The paths of the
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
        if isinstance(block.get("excluded_by_reason"), dict):
            block = _cohort_counts(block, minimum, path, where)
        out = {k: suppress(v, minimum, f"{path}.{k}" if path else k, where) for k, v in block.items()}
        return _complement(out, minimum, path, where)
    if isinstance(block, list):
        return [suppress(v, minimum, f"{path}[{i}]", where) for i, v in enumerate(block)]
    return block


_COUNT_KEYS = frozenset({"n", "percent", "suppressed"})


def _small(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < minimum


def _cohort_counts(cohort: dict[str, Any], minimum: int, path: str, where: list[str]) -> dict[str, Any]:
    """A cohort's plain counts: the excluded patients and their reasons. Small ones become null; one
    small reason among others takes the smallest other with it (the total would give it away)."""
    prefix = f"{path}." if path else ""
    reasons = dict(cohort["excluded_by_reason"])
    hidden = [k for k, v in reasons.items() if _small(v, minimum)]
    if len(hidden) == 1:
        others = [(v, k) for k, v in reasons.items() if k not in hidden and isinstance(v, int) and v > 0]
        if others:
            hidden.append(min(others)[1])
    for key in hidden:
        reasons[key] = None
        where.append(f"{prefix}excluded_by_reason.{key}")
    out = {**cohort, "excluded_by_reason": reasons}
    if _small(cohort.get("excluded"), minimum):
        out["excluded"] = None
        where.append(f"{prefix}excluded")
    return out


def _complement(block: dict[str, Any], minimum: int, path: str, where: list[str]) -> dict[str, Any]:
    """Secondary suppression: in a set of sibling counts (sex, age bands, severities …) whose total
    is shown elsewhere, one suppressed cell could be recovered by subtraction, so the smallest
    other non-zero cell is suppressed with it."""
    cells = {k: v for k, v in block.items() if isinstance(v, dict) and v and set(v) <= _COUNT_KEYS and "n" in v}
    if len(cells) < 2 or len(cells) != len(block):
        return block
    hidden = [k for k, v in cells.items() if v.get("suppressed")]
    if len(hidden) != 1:
        return block
    shown = [(v["n"], k) for k, v in cells.items() if not v.get("suppressed") and isinstance(v["n"], int) and v["n"] > 0]
    if not shown:
        return block
    _, key = min(shown)
    where.append(f"{path}.{key}" if path else key)
    return {**block, key: {**_blank(block[key]), "suppressed": True}}


def apply_disclosure_control(statistics: dict[str, Any], minimum: int) -> dict[str, Any]:
    """Suppress every small cell of ``statistics`` in place; add ``disclosure`` saying where."""
    where: list[str] = []
    if minimum > 1:
        for key in list(statistics):
            if key not in NOT_CELLS:
                statistics[key] = suppress(statistics[key], minimum, key, where)
    statistics["disclosure"] = {"min_cell": minimum, "suppressed_cells": len(where), "suppressed": where}
    return statistics
