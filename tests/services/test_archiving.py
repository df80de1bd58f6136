import asyncio
from collections.abc import Iterable
from typing import Any

import msgspec
import pytest
from bson import ObjectId

from app.engine.state import Event, RunStatus
from app.services.archiving import MAX_WAITING_TURNS, EventArchiver
from app.store.documents import CommittedState, RunDocument
from tests.support import FakeClock, wait_until


class HeldRunStore:
    """Records what each insert archives; holds inserts while ``gate`` is clear, and fails
    the next one if ``fail_next`` is set."""

    def __init__(self) -> None:
        self.inserts: list[dict[ObjectId, list[int]]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_next = False

    async def archive(self, runs: Iterable[tuple[RunDocument, Iterable[int]]]) -> None:
        self.inserts.append({run.id: list(turns) for run, turns in runs})
        await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("MongoDB went away")


def run_after(turn: int, first_turn_in_log: int = 1, run_id: ObjectId | None = None) -> RunDocument:
    """A run whose turns ``first_turn_in_log`` to ``turn`` are in its log."""
    clock = FakeClock()
    log = [
        Event(seq=t, turn=t, type="message", node_id="n", at=clock(), data={})
        for t in range(first_turn_in_log, turn + 1)
    ]
    state = CommittedState.before_first_turn({}, clock())
    return RunDocument(
        id=run_id or ObjectId(),
        tenant="acme",
        workflow_id=ObjectId(),
        version=0,
        revision=turn,
        created_at=clock(),
        execution_source="API",
        total_nodes=1,
        state=msgspec.structs.replace(
            state, status=RunStatus.WAITING_FOR_USER_INPUT, turn=turn, seq=turn
        ),
        claim=None,
        log=log,
    )


def archiver_on(store: HeldRunStore, window: float = 0) -> EventArchiver:
    runs: Any = store
    return EventArchiver(runs, window)


async def test_a_turn_whose_insert_is_in_flight_is_not_inserted_again() -> None:
    store = HeldRunStore()
    archiver = archiver_on(store)
    first = run_after(1)
    store.gate.clear()
    archiver.start(first)
    await wait_until(lambda: len(store.inserts) == 1)
    # The next turn commits before the insert is answered: turn 1 is still in its log.
    archiver.start(run_after(2, run_id=first.id))
    store.gate.set()
    await archiver.drain()
    assert store.inserts == [{first.id: [1]}, {first.id: [2]}]
    assert archiver.archived_through(first.id) == 2


async def test_a_failed_insert_joins_the_next_insert_of_its_run() -> None:
    store = HeldRunStore()
    archiver = archiver_on(store)
    first = run_after(1)
    store.gate.clear()
    store.fail_next = True
    archiver.start(first)
    await wait_until(lambda: len(store.inserts) == 1)
    # Queued while turn 1 was in flight: without it, until its insert fails.
    archiver.start(run_after(2, run_id=first.id))
    store.gate.set()
    await archiver.drain()
    assert store.inserts == [{first.id: [1]}, {first.id: [1, 2]}]
    assert archiver.archived_through(first.id) == 2


async def test_a_failed_insert_leaves_its_turns_unknown() -> None:
    store = HeldRunStore()
    archiver = archiver_on(store)
    run = run_after(1)
    store.fail_next = True
    archiver.start(run)
    await archiver.drain()
    assert archiver.archived_through(run.id) == 0
    archiver.start(run_after(2, run_id=run.id))
    await archiver.drain()
    assert store.inserts[-1] == {run.id: [1, 2]}
    assert archiver.archived_through(run.id) == 2


async def test_turns_trimmed_by_another_process_do_not_stop_the_log_being_trimmed() -> None:
    store = HeldRunStore()
    archiver = archiver_on(store)
    # Turns 1-2 were archived (and trimmed from the log) by another server process.
    run = run_after(3, first_turn_in_log=3)
    archiver.start(run)
    await archiver.drain()
    assert archiver.archived_through(run.id) == 3


@pytest.mark.parametrize("known", [0, 1])
async def test_turns_known_to_be_archived_are_not_inserted_again(known: int) -> None:
    store = HeldRunStore()
    archiver = archiver_on(store)
    run = run_after(1)
    archiver.start(run)
    await archiver.drain()
    # A commit that read the log before the insert of turn 1 was known.
    archiver.start(run_after(2, first_turn_in_log=1 + known, run_id=run.id))
    await archiver.drain()
    assert store.inserts == [{run.id: [1]}, {run.id: [2]}]


async def test_the_turns_committed_within_the_window_share_one_insert() -> None:
    store = HeldRunStore()
    archiver = archiver_on(store, window=0.05)
    first, other = run_after(1), run_after(1)
    archiver.start(first)
    await asyncio.sleep(0.01)
    archiver.start(run_after(2, run_id=first.id))  # its log holds turn 1 too
    archiver.start(other)
    assert store.inserts == []
    await asyncio.sleep(0.1)
    assert store.inserts == [{first.id: [1, 2], other.id: [1]}]


async def test_a_run_with_many_turns_waiting_does_not_wait_for_the_window() -> None:
    store = HeldRunStore()
    archiver = archiver_on(store, window=3600)
    run = run_after(MAX_WAITING_TURNS)
    archiver.start(run)
    await wait_until(lambda: bool(store.inserts))
    assert store.inserts == [{run.id: list(range(1, MAX_WAITING_TURNS + 1))}]


async def test_draining_does_not_wait_for_the_window() -> None:
    store = HeldRunStore()
    archiver = archiver_on(store, window=3600)
    run = run_after(1)
    archiver.start(run)
    await asyncio.wait_for(archiver.drain(), 1)
    assert store.inserts == [{run.id: [1]}]
    # Afterwards, the window applies again.
    archiver.start(run_after(2, run_id=run.id))
    for _ in range(100):
        await asyncio.sleep(0)
    assert len(store.inserts) == 1
    await archiver.drain()
