"""The run cache: bounded by bytes, and used only while its copies are mostly fresh."""

from app.services.run_cache import RunCache
from app.store.documents import RunDocument
from tests.store.test_runs import waiting_run
from tests.support import FakeClock


def run() -> RunDocument:
    return waiting_run(FakeClock())  # a new id each time


def test_the_least_recently_committed_runs_go_first_past_the_budget() -> None:
    cache = RunCache(max_bytes=6_400)  # sixteen runs of 400 bytes
    runs = [run() for _ in range(17)]
    for each in runs:
        cache.put(each, 400)
    assert [cache.peek(each.id) for each in runs] == [None, *runs[1:]]
    cache.put(runs[1], 400)  # committed again: now the most recent
    cache.put(run(), 400)
    assert cache.peek(runs[2].id) is None and cache.peek(runs[1].id) is runs[1]
    assert len(cache) == 16


def test_a_run_larger_than_a_sixteenth_of_the_budget_is_not_kept() -> None:
    cache = RunCache(max_bytes=6_400)
    big = run()
    cache.put(big, 401)
    assert cache.peek(big.id) is None and len(cache) == 0


def test_copies_are_left_unused_while_many_turn_out_stale_but_still_probed() -> None:
    cache = RunCache(max_bytes=1_000_000)
    assert cache.worth_using()
    for _ in range(7):
        cache.used(stale=False)
    cache.used(stale=True)  # one in eight: still worth it
    assert cache.worth_using()
    cache.used(stale=True)
    decisions = [cache.worth_using() for _ in range(32)]
    assert decisions.count(True) == 2  # one turn in sixteen still tries its copy
    for _ in range(64):  # sticky routing came back: fresh copies wash the stale out
        cache.used(stale=False)
    assert cache.worth_using()
