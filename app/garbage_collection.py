"""The garbage collector's settings for a long-lived process that holds a growing heap:
the server (its embedded store keeps every run and event in memory), and the wire
double that tests and benchmarks use in MongoDB's place."""

import gc

# Young collections every 2,000 allocations (Python's default is 700, about a turn's
# worth: a turn's short-lived objects were caught alive and promoted). Full ones as
# often as Python's own rules let them come (the third threshold at 1, its default 10),
# each walking only what was made since the last (``_freeze_what_full_collections_keep``):
# frequent and short rather than rare and long. Under wrk the longest took 27 ms with 1,
# 42 ms with 3, 62 ms with 10, and the collector's total time was the same within a tenth.
GC_THRESHOLDS = (2000, 10, 1)


def tune_garbage_collection() -> None:
    """Full collections walk every container the process holds, the embedded store's
    documents included, and pause every turn in flight while they do: under load they
    came about once a second and took 30 to 130 ms, and found next to nothing to free
    (Tandem's data has no reference cycles). What start-up made (modules, the app, the
    compiled examples, a restored data file) lives as long as the process: frozen, it
    is left out of them, and so is what each full collection keeps
    (docs/performance.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    if _freeze_what_full_collections_keep not in gc.callbacks:
        gc.callbacks.append(_freeze_what_full_collections_keep)


def _freeze_what_full_collections_keep(phase: str, info: dict[str, int]) -> None:
    """After each full collection, freeze what it kept, so that the next one walks only
    what was made since. A store that grows (the embedded store holds every run and
    event in this heap, ~10 KB a turn) otherwise makes every full collection walk all
    of it: measured under wrk, the third one took 548 ms with 1.3 million objects, and
    freed nothing. Frozen after each, they stay short however long the load.
    The price: a reference cycle still alive at a full collection is never collected
    once it becomes garbage. What is alive then beside the store is a few turns in
    flight, and Tandem's data holds no cycles: after a minute of turns, or of requests
    refused with errors, unfreezing everything and collecting found nothing to free."""
    if phase == "stop" and info["generation"] == 2:
        gc.freeze()
