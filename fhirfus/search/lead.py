"""The lead of a search with several plain criteria, picked by counting its candidates' index rows.

The kind of a parameter (``compiler.lead_rank``) says what a criterion *tends* to match, not what it
matches here: one Patient with 100,000 Observations makes ``subject=`` the worst lead for a code
found on a single one of them, and the planner's statistics, sampled and often stale, are no
better guide. So each candidate's index rows are counted, but only up to a cap: ``SELECT count(*)
FROM (SELECT resource_pk FROM search_<type> WHERE … LIMIT cap)`` reads at most ``cap`` index
entries. The candidates are counted in ``lead_rank`` order, each up to the fewest rows found so
far (a candidate only matters if it has fewer); the first with fewer rows than the cap wins, so
ties go to the kind. While every candidate fills the cap the cap grows, up to ``LAST_CAP``:
deciding costs at most a few times the rows the chosen lead will read anyway, and past
``LAST_CAP`` rows per candidate the kind decides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import Connection, Select, func, select

from fhirfus.search.compiler import lead_rank
from fhirfus.search.query import Criterion

#: Rows counted per candidate in the first round; each further round counts ``GROWTH`` times more.
FIRST_CAP = 64
GROWTH = 4
#: Past this many rows for every candidate, counting further is not worth it: the kind decides.
LAST_CAP = 16_384

#: ``(criterion, cap)`` → the criterion's index rows, counted up to ``cap``.
Counter = Callable[[Criterion, int], int]


def pick_lead(candidates: Sequence[Criterion], count: Counter) -> Criterion:
    """The candidate with the fewest index rows (``count``), ties and giants left to ``lead_rank``."""
    ranked = sorted(candidates, key=lead_rank)  # stable: the first written leads among equals
    if len(ranked) == 1:
        return ranked[0]
    cap = FIRST_CAP
    while True:
        lead, fewest = None, cap
        for criterion in ranked:
            rows = count(criterion, fewest)
            if rows < fewest:
                lead, fewest = criterion, rows
        if lead is not None:
            return lead
        if cap >= LAST_CAP:
            return ranked[0]
        cap *= GROWTH


def index_counter(conn: Connection, lookup: Callable[[Criterion], Select | None]) -> Counter:
    """Counts a plain criterion's index rows on ``conn``, ``lookup`` giving its index select
    (``Compiler.index_lookup``)."""
    def count(criterion: Criterion, cap: int) -> int:
        rows = lookup(criterion)
        if rows is None:  # not a lookup in an index table: never a candidate, never the lead
            return cap
        capped = rows.limit(cap).subquery()
        return int(conn.execute(select(func.count()).select_from(capped)).scalar_one())
    return count
