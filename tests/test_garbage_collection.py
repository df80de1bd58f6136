"""How the server process (and the wire double) tune Python's garbage collector once up."""

import gc
from collections.abc import Iterator

import pytest

from app import garbage_collection


@pytest.fixture
def freezing_after_full_collections() -> Iterator[None]:
    gc.callbacks.append(garbage_collection._freeze_what_full_collections_keep)
    try:
        yield
    finally:
        gc.callbacks.remove(garbage_collection._freeze_what_full_collections_keep)
        gc.unfreeze()


@pytest.mark.usefixtures("freezing_after_full_collections")
def test_what_a_full_collection_keeps_is_left_out_of_the_next() -> None:
    """An embedded store keeps every run in the heap: were each full collection to walk
    it all, the server's pauses would grow with the store."""
    kept = [[n] for n in range(20_000)]  # long-lived containers, as a store's documents
    gc.collect()
    frozen = gc.get_freeze_count()
    assert frozen >= len(kept)
    made_since = [[n] for n in range(5_000)]
    gc.collect()
    assert gc.get_freeze_count() >= frozen + len(made_since)
    assert len(gc.get_objects(generation=2)) < len(kept)


@pytest.mark.usefixtures("freezing_after_full_collections")
def test_garbage_made_after_a_freeze_is_still_collected() -> None:
    gc.collect()  # freezes what is alive now
    gc.disable()  # so that the cycles wait for the collection below
    try:
        for _ in range(1_000):
            cycle: list[object] = []
            cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1_000
    finally:
        gc.enable()
