import os
from datetime import timedelta
from typing import Any
from unittest import mock

import mongomock.filtering
import msgspec
import pytest
from bson import ObjectId

from app.engine.state import Event, RunStatus
from app.store.database import Database
from app.store.documents import (
    Claim,
    RunDocument,
    RunProgress,
    dump_json,
    encode_events,
    turn_events_id,
)
from app.store.store import Store
from tests.support import FakeClock


@pytest.fixture
async def store(database_per_backend: Database) -> Store:
    store = Store(database_per_backend)
    await store.ensure_indexes()
    return store


def waiting_run(clock: FakeClock) -> RunDocument:
    now = clock()
    first = Event(seq=1, turn=1, type="run_started", node_id=None, at=now, data={"$k.x": 1})
    return RunDocument(
        id=ObjectId(),
        tenant="acme",
        workflow_id=ObjectId(),
        version=0,
        revision=0,
        claim=None,
        created_at=now,
        progress=RunProgress(
            status=RunStatus.WAITING_FOR_USER_INPUT,
            turn=1,
            seq=1,
            current_node="ask",
            variables_json=dump_json({"$odd.key": {"a.b": 1}}),
            history_json="[]",
            waiting_for=None,
            output_json="null",
            error=None,
            last_events_json=encode_events([first]),
            updated_at=now,
        ),
    )


def claim(clock: FakeClock, token: str = "t1") -> Claim:
    return Claim(
        token=token,
        message="hi",
        data_json=dump_json({"$k": 1}),
        expires_at=clock() + timedelta(seconds=30),
    )


def progress(run: RunDocument, clock: FakeClock) -> RunProgress:
    event = Event(
        seq=run.progress.seq + 1,
        turn=run.progress.turn + 1,
        type="run_cancelled",
        node_id=None,
        at=clock(),
        data={},
    )
    return RunProgress(
        status=RunStatus.CANCELLED,
        turn=run.progress.turn + 1,
        seq=run.progress.seq + 1,
        current_node=None,
        variables_json=run.progress.variables_json,
        history_json="[]",
        waiting_for=None,
        output_json="null",
        error=None,
        last_events_json=encode_events([event]),
        updated_at=clock(),
    )


async def test_documents_round_trip_with_odd_keys(store: Store) -> None:
    clock = FakeClock()
    run = waiting_run(clock)
    await store.runs.insert(run)
    stored = await store.runs.find("acme", run.id)
    assert stored == run
    assert stored is not None and stored.progress.variables == {"$odd.key": {"a.b": 1}}


async def test_runs_of_another_tenant_are_invisible(store: Store) -> None:
    run = waiting_run(FakeClock())
    await store.runs.insert(run)
    assert await store.runs.find("globex", run.id) is None
    assert (
        await store.runs.claim_for_turn("globex", run.id, run.workflow_id, claim(FakeClock()))
        is None
    )


async def test_a_run_can_be_claimed_once(store: Store) -> None:
    clock = FakeClock()
    run = waiting_run(clock)
    await store.runs.insert(run)
    first = await store.runs.claim_for_turn("acme", run.id, run.workflow_id, claim(clock, "t1"))
    second = await store.runs.claim_for_turn("acme", run.id, run.workflow_id, claim(clock, "t2"))
    assert first is not None and first.claim is None  # the run as it was before the claim
    assert second is None
    stored = await store.runs.find("acme", run.id)
    assert stored is not None and stored.claim == claim(clock, "t1")


async def test_only_the_claim_holder_commits(store: Store) -> None:
    clock = FakeClock()
    run = waiting_run(clock)
    await store.runs.insert(run)
    await store.runs.claim_for_turn("acme", run.id, run.workflow_id, claim(clock, "t1"))
    assert not await store.runs.commit_turn(run.id, "someone-else", progress(run, clock))
    assert await store.runs.commit_turn(run.id, "t1", progress(run, clock))
    stored = await store.runs.find("acme", run.id)
    assert (
        stored is not None
        and stored.claim is None
        and stored.progress.status == RunStatus.CANCELLED
    )


async def test_an_expired_claim_can_be_taken_over_keeping_its_input(store: Store) -> None:
    clock = FakeClock()
    run = waiting_run(clock)
    await store.runs.insert(run)
    await store.runs.claim_for_turn("acme", run.id, run.workflow_id, claim(clock, "t1"))
    later = clock() + timedelta(seconds=60)
    assert await store.runs.take_over_interrupted("acme", run.id, clock(), "t2", later) is None
    clock.advance(31)
    taken = await store.runs.take_over_interrupted("acme", run.id, clock(), "t2", later)
    assert taken is not None and taken.claim is not None
    assert (taken.claim.token, taken.claim.message, taken.claim.data) == ("t2", "hi", {"$k": 1})
    assert not await store.runs.commit_turn(run.id, "t1", progress(run, clock))


async def test_events_are_archived_once_per_turn(store: Store) -> None:
    run = waiting_run(FakeClock())
    await store.runs.insert(run)
    await store.runs.archive_events(run)
    await store.runs.archive_events(run)  # a repeat (a retry, a recovery) is harmless
    assert await store.runs.archived_events(run, None) == run.progress.last_events()
    assert await store.runs.archived_events(run, 2) == []


async def test_replace_progress_refuses_a_run_that_changed(store: Store) -> None:
    clock = FakeClock()
    run = waiting_run(clock)
    await store.runs.insert(run)
    await store.runs.claim_for_turn("acme", run.id, run.workflow_id, claim(clock))
    assert not await store.runs.replace_progress(run, progress(run, clock))


async def test_a_long_turn_renews_its_lease_only_while_it_holds_the_claim(store: Store) -> None:
    clock = FakeClock()
    run = waiting_run(clock)
    await store.runs.insert(run)
    await store.runs.claim_for_turn("acme", run.id, run.workflow_id, claim(clock, "t1"))
    later = clock() + timedelta(seconds=90)
    assert await store.runs.renew_claim(run.id, "t1", later)
    current = await store.runs.current_claim(run.id)
    assert current is not None and current.token == "t1" and current.expires_at == later
    assert not await store.runs.renew_claim(run.id, "t2", later)
    await store.runs.commit_turn(run.id, "t1", progress(run, clock))
    assert await store.runs.current_claim(run.id) is None
    assert not await store.runs.renew_claim(run.id, "t1", later)


async def examined_while_reading(store: Store, run: RunDocument) -> int:
    """How many stored documents reading ``run``'s events looks at: mongomock's own
    matching, counted (the wire double's mongomock runs in this process too); on a real
    MongoDB, the query plan's ``totalDocsExamined``."""
    if os.environ.get("MONGODB_URI"):
        events = store.runs._events  # the plan of the very query archived_events sends
        ids = [turn_events_id(run.id, turn) for turn in range(1, run.progress.turn + 1)]
        plan = await events.find({"_id": {"$in": ids}, "tenant": run.tenant}).explain()
        return int(plan["executionStats"]["totalDocsExamined"])
    examined = 0
    real_filter_applies = mongomock.filtering.filter_applies

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal examined
        examined += 1
        return real_filter_applies(*args, **kwargs)

    with (
        mock.patch("mongomock.collection.filter_applies", counting),
        mock.patch("mongomock.filtering.filter_applies", counting),
    ):
        await store.runs.archived_events(run, None)
    return examined


async def test_reading_a_runs_events_does_not_depend_on_other_runs(
    store: Store, clock: FakeClock
) -> None:
    async def run_with_three_turns() -> RunDocument:
        run = waiting_run(clock)
        for turn in (1, 2, 3):
            await store.runs.archive_events(
                msgspec.structs.replace(
                    run, progress=msgspec.structs.replace(run.progress, turn=turn)
                )
            )
        return msgspec.structs.replace(run, progress=msgspec.structs.replace(run.progress, turn=3))

    mine = await run_with_three_turns()
    alone = await examined_while_reading(store, mine)
    for _ in range(300):
        await run_with_three_turns()
    crowded = await examined_while_reading(store, mine)
    assert alone == crowded == 3
    assert [e.turn for e in await store.runs.archived_events(mine, None)] == [1, 1, 1]
