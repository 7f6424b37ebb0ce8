"""``$translate``: a code of one system to the codes a ConceptMap relates it to.

The map is named by ``url``, or found among the known ConceptMaps (the guide's and registered
ones) by source value set, target value set or system and the code's system.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fhirfus.terminology.expansion import ValueSetError
from fhirfus.terminology.sources import Lookup, finder, guide_resources, registered_resources

NO_MATCH = frozenset({"unmatched", "disjoint"})


class UnknownConceptMap(ValueSetError):
    """The canonical names no concept map known here."""


@dataclass(frozen=True)
class Match:
    """One target of a translation."""

    equivalence: str
    system: str
    code: str
    display: str | None
    source: str  # the ConceptMap's canonical URL


def translate(
    system: str, code: str, lookup: Lookup | None = None, *, url: str | None = None,
    source: str | None = None, target: str | None = None, target_system: str | None = None,
    reverse: bool = False,
) -> list[Match]:
    """The matches of ``system#code`` in the map ``url``, or in every known map that fits."""
    if url is not None:
        found = finder(lookup)("ConceptMap", url)
        if found is None:
            raise UnknownConceptMap(f"ConceptMap '{url}' is not known to this server")
        maps: Iterable[Mapping[str, Any]] = [found]
    else:
        maps = [m for m in _known() if _fits(m, source, target, reverse)]
    matches: list[Match] = []
    for conceptmap in maps:
        canonical = str(conceptmap.get("url"))
        for group in conceptmap.get("group") or ():
            matches.extend(_group_matches(group, system, code, target_system, canonical, reverse))
    return matches


def _known() -> list[Mapping[str, Any]]:
    seen: dict[str, Mapping[str, Any]] = {}
    for conceptmap in [*registered_resources("ConceptMap"), *guide_resources("ConceptMap")]:
        seen.setdefault(str(conceptmap.get("url")), conceptmap)
    return list(seen.values())


def _fits(conceptmap: Mapping[str, Any], source: str | None, target: str | None, reverse: bool) -> bool:
    mine_source = conceptmap.get("sourceUri") or conceptmap.get("sourceCanonical")
    mine_target = conceptmap.get("targetUri") or conceptmap.get("targetCanonical")
    if reverse:
        mine_source, mine_target = mine_target, mine_source
    return (source is None or source == mine_source) and (target is None or target == mine_target)


def _group_matches(
    group: Mapping[str, Any], system: str, code: str, target_system: str | None, canonical: str, reverse: bool,
) -> Iterable[Match]:
    source_system, to_system = group.get("source"), group.get("target")
    if reverse:
        source_system, to_system = to_system, source_system
    if source_system != system or (target_system is not None and to_system != target_system):
        return
    for element in group.get("element") or ():
        for target in element.get("target") or ():
            equivalence = str(target.get("equivalence", "equivalent"))
            if equivalence in NO_MATCH:
                continue
            if not reverse and element.get("code") == code:
                yield Match(equivalence, str(to_system), str(target.get("code")), target.get("display"), canonical)
            elif reverse and target.get("code") == code:
                yield Match(_reversed(equivalence), str(to_system), str(element.get("code")), element.get("display"),
                            canonical)


def _reversed(equivalence: str) -> str:
    return {"wider": "narrower", "narrower": "wider", "subsumes": "specializes",
            "specializes": "subsumes"}.get(equivalence, equivalence)
