"""The lead of a search with several plain criteria, picked by counting its candidates' index rows.

The kind of a parameter (``compiler.lead_rank``) says what a criterion *tends* to match, not what it
matches here: one Patient with 100,000 Observations makes ``subject=`` the worst lead for a code
found on a single one of them, and the planner's statistics, sampled and often stale, are no
better guide. So each candidate's index rows are counted, but only up to a cap: ``SELECT count(*)
FROM (SELECT resource_pk FROM search_<type> WHERE … LIMIT cap)`` reads at most ``cap`` index
entries. The kind's own choice is counted first, alone: below ``FIRST_CAP`` rows it leads, as no
other can save more than those few probes (and one lookup is built, the one the search then runs).
Otherwise one statement counts every candidate; the one with the fewest rows below the cap
leads, ties going to the kind. While every candidate fills the cap, the cap grows, up to
``LAST_CAP``: deciding reads at most a few times the rows the chosen lead reads anyway, and past
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

#: ``(criteria, cap)`` → each criterion's index rows, counted up to ``cap``.
Counter = Callable[[Sequence[Criterion], int], list[int]]


def pick_lead(candidates: Sequence[Criterion], count: Counter) -> Criterion:
    """The candidate with the fewest index rows (``count``), ties and giants left to ``lead_rank``."""
    ranked = sorted(candidates, key=lead_rank)  # stable: the first written leads among equals
    if len(ranked) == 1 or count(ranked[:1], FIRST_CAP)[0] < FIRST_CAP:
        return ranked[0]  # the kind's lead reads fewer than FIRST_CAP rows: no other can be much cheaper
    cap = FIRST_CAP
    while True:
        rows = count(ranked, cap)
        fewest = min(rows)
        if fewest < cap:
            return ranked[rows.index(fewest)]
        if cap >= LAST_CAP:
            return ranked[0]
        cap *= GROWTH


def count_statement(criteria: Sequence[Criterion], cap: int, lookup: Callable[[Criterion], Select | None]) -> Select:
    """One row: each criterion's index rows up to ``cap``, ``lookup`` giving its index select
    (``Compiler.index_lookup``)."""
    counts = []
    for criterion in criteria:
        rows = lookup(criterion)
        if rows is None:  # not a lookup in an index table: never a candidate
            raise ValueError(f"'{criterion.name}' is not a plain criterion")
        counts.append(select(func.count()).select_from(rows.limit(cap).subquery()).scalar_subquery())
    return select(*counts)


def index_counter(conn: Connection, lookup: Callable[[Criterion], Select | None]) -> Counter:
    """Counts plain criteria's index rows on ``conn``, all in one statement (a round trip costs more
    than the rows on a busy machine)."""
    def count(criteria: Sequence[Criterion], cap: int) -> list[int]:
        return [int(n) for n in conn.execute(count_statement(criteria, cap, lookup)).one()]
    return count
