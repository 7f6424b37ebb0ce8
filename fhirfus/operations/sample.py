"""The small sample data set that ``make run`` loads into an empty database.

The resources live in ``mappings/sample/resources.json`` (data, not code). They are written
through the same validation and repository path as any client write.
"""

from __future__ import annotations

from pathlib import Path

import orjson
from sqlalchemy import func, select

from fhirfus.fhir.validation import validate_resource
from fhirfus.store import repository
from fhirfus.store.repository import Store
from fhirfus.store.tables import resources

SAMPLE_FILE = Path(__file__).resolve().parents[2] / "mappings" / "sample" / "resources.json"


def load_sample(store: Store, *, only_if_empty: bool = False) -> int:
    """Write the sample resources (update-as-create, so a rerun adds versions, not duplicates)."""
    items = [validate_resource(r) for r in orjson.loads(SAMPLE_FILE.read_bytes())]
    with store.writing() as conn:
        if only_if_empty and conn.execute(select(func.count()).select_from(resources)).scalar_one() > 0:
            return 0
        for item in items:
            previous = repository.current(conn, item["resourceType"], item["id"], for_update=True)
            if previous is None:
                repository.create(conn, item["resourceType"], item["id"], item, "PUT")
            else:
                repository.replace(conn, previous, item, "PUT")
    return len(items)
