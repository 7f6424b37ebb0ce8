"""``fhirfus export bulk``: a system-level export straight into a directory, for operators.

The same selection and runner as ``$export`` (``bulk_run``), without a job row or HTTP: the files
land in ``--out`` together with a ``manifest.json`` shaped like the completion manifest (file
names instead of URLs), so the directory can be handed to anything that reads Bulk Data output.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from fhirfus.bulk.params import ExportRequest, parse_export_params
from fhirfus.bulk.run import Checkpoint, ExportLimits, ExportResult, run_export
from fhirfus.db.visibility import EVERYTHING
from fhirfus.settings import Settings
from fhirfus.store.repository import Store, format_instant

MANIFEST = "manifest.json"


def local_request(types: str | None, since: str | None) -> ExportRequest:
    """The command's options as kick-off parameters (same checks, same messages)."""
    params = [("_type", types)] if types else []
    if since:
        params.append(("_since", since))
    return parse_export_params("system", params, seen_by=EVERYTHING)  # the operator's export: every site


def export_to_directory(
    store: Store, settings: Settings, request: ExportRequest, out: Path, checkpoint: Checkpoint | None = None
) -> ExportResult:
    limits = ExportLimits(settings.export_file_max_resources, settings.export_file_max_bytes)
    result = run_export(store, request, out, limits=limits, checkpoint=checkpoint)
    manifest = {
        "transactionTime": format_instant(result.transaction_time),
        "request": "fhirfus export bulk" + "".join(
            f" --{flag} {value}" for flag, value in (("type", ",".join(request.types)), ("since", request.since))
            if value
        ),
        "requiresAccessToken": False,
        "output": [{"type": f.res_type, "url": f.name, "count": f.count} for f in result.files if f.kind == "output"],
        "error": [{"type": f.res_type, "url": f.name, "count": f.count} for f in result.files if f.kind == "error"],
    }
    if request.since is not None:
        manifest["deleted"] = [{"type": f.res_type, "url": f.name, "count": f.count}
                               for f in result.files if f.kind == "deleted"]
    (out / MANIFEST).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return result
