"""The de-identification of views (an analyst's, or anybody's naming a ``policy``), as the routes
and the export worker get it."""

from __future__ import annotations

from fhirfus.interactions.viewdefinition import RowShaping, Shaper, ViewRun
from fhirfus.store.repository import Store


def policy_shaper(store: Store, key: str | None) -> Shaper:
    """The policies' de-identification, imported on first use (it brings pandas along)."""
    def shape(run: ViewRun, policy_name: str | None) -> RowShaping:
        from fhirfus.analysis.viewpolicy import deidentification

        return deidentification(store, key, run, policy_name)
    return shape
