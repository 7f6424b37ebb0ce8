"""The garbage collector's view of a fhirfus process."""

from __future__ import annotations

import gc


def freeze_start_up_heap() -> None:
    """Keep what start-up loaded out of the garbage collector's walks.

    The models, validators and parameter tables live as long as the process, yet every full
    collection walked them again; a 100-entry transaction Bundle triggers several, and they took
    half of the index-row building (bench/search.py). Garbage is collected first, so none
    of it is kept for good. Called by the server at start-up, by the data commands and by the
    benches that write in their own process, after everything they load at start is loaded.
    """
    gc.collect()
    gc.freeze()
