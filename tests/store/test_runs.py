import os
from datetime import datetime, timedelta
from typing import Any
from unittest import mock

import mongomock.filtering
import msgspec
import pytest
from bson import ObjectId

from app.engine.state import Event, RunStatus
from app.store import embedded
from app.store.database import Database
from app.store.documents import (
    Claim,
    CommittedState,
    LiveText,
    RunDocument,
    TurnEventsDocument,
    turn_events_id,
)
from app.store.store import Store
from tests.support import FakeClock

# Keys MongoDB refuses or cannot query, an integer wider than BSON's, and the escape
# character itself: all must come back as they went in.
NOW = FakeClock()()  # these runs have no cleanup_after: found at any time
ODD_VALUE = {"$odd.key": {"a.b": 1, "": [2**70, {"%int": "x"}], "%25": "\x00", "n\x00ul": -(2**63)}}


@pytest.fixture
async def store(database_per_backend: Database) -> Store:
    store = Store(database_per_backend)
    await store.ensure_indexes()
    return store


def event(seq: int, turn: int, clock: FakeClock, data: dict[str, Any] | None = None) -> Event:
    return Event(seq=seq, turn=turn, type="message", node_id="n", at=clock(), data=data or {})


def waiting_run(clock: FakeClock) -> RunDocument:
    now = clock()
    first = event(1, 1, clock, {"text": ODD_VALUE})
    return RunDocument(
        id=ObjectId(),
        tenant="acme",
        workflow_id=ObjectId(),
        version=0,
        revision=0,
        created_at=now,
        execution_source="API",
        total_nodes=3,
        claim=None,
        log=[first],
        state=CommittedState(
            status=RunStatus.WAITING_FOR_USER_INPUT,
            turn=1,
            seq=1,
            current_node="ask",
            variables={"customer": "ACME", **ODD_VALUE},
            history=[],
            waiting_for=None,
            output=ODD_VALUE,
            error=None,
            updated_at=now,
        ),
    )


def claim(clock: FakeClock, token: str = "t1") -> Claim:
    return Claim(
        token=token,
        message="hi",
        data={"$k": 1},
        started_at=clock(),
        expires_at=clock() + timedelta(seconds=30),
    )


def next_state(run: RunDocument, clock: FakeClock) -> CommittedState:
    return msgspec.structs.replace(
        run.state, status=RunStatus.COMPLETED, turn=run.state.turn + 1, seq=run.next_seq
    )


async def commit(store: Store, run: RunDocument, token: str, clock: FakeClock) -> bool:
    state = next_state(run, clock)
    return await store.runs.commit_turn(
        run.id,
        token,
        state=state,
        log=[*run.log, event(state.seq, state.turn, clock)],
        visited_nodes=["ask"],
        completed_at=clock(),
        cleanup_after=None,
    )


async def test_a_run_round_trips_any_json_value(store: Store) -> None:
    run = waiting_run(FakeClock())
    await store.runs.insert(run)
    stored = await store.runs.find("acme", run.id, NOW)
    assert stored == run
    assert stored is not None and stored.state.variables["$odd.key"]["a.b"] == 1


async def test_variables_and_events_are_plain_queryable_fields(
    store: Store, database_per_backend: Database
) -> None:
    """What a user's own query (Compass, the shell) finds: runs by a variable's value, and
    archived events by type."""
    run = waiting_run(FakeClock())
    await store.runs.insert(run)
    await store.runs.archive([(run, [1])])
    runs = database_per_backend["runs"]
    found = await runs.find({"state.variables.customer": "ACME"}, {"_id": 1}).to_list(None)
    assert [raw["_id"] for raw in found] == [run.id]
    escaped = await runs.find_one({"_id": run.id})
    assert escaped is not None and "%24odd%2Ekey" in escaped["state"]["variables"]
    events = database_per_backend["run_events"]
    turns = await events.find({"run_id": run.id, "events.type": "message"}).to_list(None)
    assert [t["turn"] for t in turns] == [1]


async def test_runs_of_another_tenant_are_invisible(store: Store) -> None:
    run = waiting_run(FakeClock())
    await store.runs.insert(run)
    assert await store.runs.find("globex", run.id, NOW) is None
    assert (
        await store.runs.claim_for_turn(
            "globex", run.id, run.workflow_id, claim(FakeClock()), cleanup_after=None
        )
        is None
    )


async def test_a_run_can_be_claimed_once(store: Store) -> None:
    clock = FakeClock()
    run = waiting_run(clock)
    await store.runs.insert(run)
    first = await store.runs.claim_for_turn(
        "acme", run.id, run.workflow_id, claim(clock, "t1"), cleanup_after=None
    )
    second = await store.runs.claim_for_turn(
        "acme", run.id, run.workflow_id, claim(clock, "t2"), cleanup_after=None
    )
    assert first is not None and first.claim is None  # the run as it was before the claim
    assert second is None
    stored = await store.runs.find("acme", run.id, NOW)
    assert stored is not None and stored.claim == claim(clock, "t1")


async def test_only_the_claim_holder_commits(store: Store) -> None:
    clock = FakeClock()
    run = waiting_run(clock)
    await store.runs.insert(run)
    await store.runs.claim_for_turn(
        "acme", run.id, run.workflow_id, claim(clock, "t1"), cleanup_after=None
    )
    assert not await commit(store, run, "someone-else", clock)
    assert await commit(store, run, "t1", clock)
    stored = await store.runs.find("acme", run.id, NOW)
    assert stored is not None and stored.claim is None
    assert stored.state.status == RunStatus.COMPLETED and [e.seq for e in stored.log] == [1, 2]


async def test_a_conditional_commit_matches_only_the_revision_written_and_no_claim(
    store: Store,
) -> None:
    """A turn on a run its process cached commits (or claims) only if nothing wrote the
    run since: every write increments ``revision``."""
    clock = FakeClock()
    run = waiting_run(clock)
    await store.runs.insert(run)  # revision 0
    state = next_state(run, clock)
    fields: dict[str, Any] = {
        "state": state,
        "log": [*run.log, event(state.seq, state.turn, clock)],
        "visited_nodes": ["ask"],
        "completed_at": None,
        "cleanup_after": None,
    }
    assert not await store.runs.commit_unchanged(run.id, 1, **fields)  # not the revision
    claimed = await store.runs.claim_for_turn(
        "acme", run.id, run.workflow_id, claim(clock, "t1"), cleanup_after=None
    )
    assert claimed is not None
    assert not await store.runs.commit_unchanged(run.id, 1, **fields)  # claimed at 1
    assert not await store.runs.claim_unchanged(
        run.id, 1, claim(clock, "t2"), log=None, cleanup_after=None
    )
    assert await commit(store, run, "t1", clock)  # revision 2, claim released
    assert await store.runs.claim_unchanged(
        run.id, 2, claim(clock, "t3"), log=fields["log"], cleanup_after=None
    )
    stored = await store.runs.find("acme", run.id, NOW)
    assert stored is not None and stored.revision == 3 and stored.claim == claim(clock, "t3")
    assert [e.seq for e in stored.log] == [1, 2]
    assert not await store.runs.commit_unchanged(run.id, 3, **fields)  # claimed again
    assert await commit(store, run, "t3", clock)
    assert await store.runs.commit_unchanged(run.id, 4, **fields)
    stored = await store.runs.find("acme", run.id, NOW)
    assert stored is not None and stored.revision == 5 and stored.claim is None


async def test_progress_is_recorded_only_while_the_claim_is_held(store: Store) -> None:
    clock = FakeClock()
    run = waiting_run(clock)
    await store.runs.insert(run)
    await store.runs.claim_for_turn(
        "acme", run.id, run.workflow_id, claim(clock, "t1"), cleanup_after=None
    )
    later = clock() + timedelta(seconds=90)
    text = LiveText(after_seq=2, node_id="n", text="Hel")
    progress = {
        "log": [*run.log, event(2, 2, clock, ODD_VALUE)],
        "current_node": "n",
        "visited_nodes": ["ask", "n"],
        "live_text": text,
        "expires_at": later,
    }
    assert await store.runs.record_progress(run.id, "t1", **progress)  # type: ignore[arg-type]
    assert not await store.runs.record_progress(run.id, "t2", **progress)  # type: ignore[arg-type]
    stored = await store.runs.find("acme", run.id, NOW)
    assert stored is not None and stored.claim is not None
    assert (stored.claim.expires_at, stored.claim.live_text) == (later, text)
    assert stored.claim.current_node == "n" and stored.claim.visited_nodes == ["ask", "n"]
    assert [e.data for e in stored.log] == [{"text": ODD_VALUE}, ODD_VALUE]
    assert stored.next_seq == 3


async def test_an_expired_claim_can_be_taken_over_keeping_its_input(store: Store) -> None:
    clock = FakeClock()
    run = waiting_run(clock)
    await store.runs.insert(run)
    await store.runs.claim_for_turn(
        "acme", run.id, run.workflow_id, claim(clock, "t1"), cleanup_after=None
    )
    later = clock() + timedelta(seconds=60)
    assert await store.runs.take_over_interrupted("acme", run.id, clock(), "t2", later) is None
    assert await store.runs.expired_claims(clock(), 10) == []
    clock.advance(31)
    assert await store.runs.expired_claims(clock(), 10) == [("acme", run.id)]
    taken = await store.runs.take_over_interrupted("acme", run.id, clock(), "t2", later)
    assert taken is not None and taken.claim is not None and taken.retry_count == 1
    assert (taken.claim.token, taken.claim.message, taken.claim.data) == ("t2", "hi", {"$k": 1})
    assert not await commit(store, run, "t1", clock)


async def test_turns_are_archived_once(store: Store) -> None:
    clock = FakeClock()
    run = waiting_run(clock)
    run = msgspec.structs.replace(run, log=[*run.log, event(2, 2, clock), event(3, 2, clock)])
    await store.runs.archive([(run, [1])])
    await store.runs.archive([(run, [1, 2])])  # a repeat (a retry, a recovery) is harmless
    found = await store.runs.archived_turns(run, [1, 2, 3])
    assert [(d.turn, d.first_seq, d.last_seq) for d in found] == [(1, 1, 1), (2, 2, 3)]
    assert [e for d in found for e in d.events] == run.log


async def test_replace_state_refuses_a_run_that_changed(store: Store) -> None:
    clock = FakeClock()
    run = waiting_run(clock)
    await store.runs.insert(run)
    await store.runs.claim_for_turn(
        "acme", run.id, run.workflow_id, claim(clock), cleanup_after=None
    )
    assert not await store.runs.replace_state(run, next_state(run, clock), run.log, clock(), None)
    current = await store.runs.find("acme", run.id, NOW)
    assert current is not None
    assert await store.runs.replace_state(current, next_state(run, clock), run.log, clock(), None)


async def examined_while_reading(store: Store, run: RunDocument, turns: list[int]) -> int:
    """How many stored documents reading ``run``'s archived turns looks at: the documents
    matched against the filter, by mongomock or by the embedded store's own matching,
    counted (the wire double's mongomock runs in this process too); on a real MongoDB,
    the query plan's ``totalDocsExamined``."""
    if os.environ.get("MONGODB_URI"):
        events = store.runs._events  # the plan of the very query archived_turns sends
        ids = [turn_events_id(run.id, turn) for turn in turns]
        plan = await events.find({"_id": {"$in": ids}, "tenant": run.tenant}).explain()
        return int(plan["executionStats"]["totalDocsExamined"])
    examined = 0
    real_filter_applies = mongomock.filtering.filter_applies

    real_matches = embedded._matches

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal examined
        examined += 1
        return real_filter_applies(*args, **kwargs)

    def counting_decided(*args: Any, **kwargs: Any) -> Any:
        nonlocal examined
        matched = real_matches(*args, **kwargs)
        examined += matched is not None  # else mongomock's filter_applies decides
        return matched

    with (
        mock.patch("mongomock.collection.filter_applies", counting),
        mock.patch("mongomock.filtering.filter_applies", counting),
        mock.patch("app.store.embedded._matches", counting_decided),
    ):
        await store.runs.archived_turns(run, turns)
    return examined


async def test_reading_a_runs_events_does_not_depend_on_other_runs(
    store: Store, clock: FakeClock
) -> None:
    async def run_with_three_turns() -> RunDocument:
        run = waiting_run(clock)
        run = msgspec.structs.replace(run, log=[event(seq, seq, clock) for seq in (1, 2, 3)])
        await store.runs.archive([(run, [1, 2, 3])])
        return run

    mine = await run_with_three_turns()
    alone = await examined_while_reading(store, mine, [1, 2, 3])
    for _ in range(300):
        await run_with_three_turns()
    crowded = await examined_while_reading(store, mine, [1, 2, 3])
    assert alone == crowded == 3
    found = await store.runs.archived_turns(mine, [1, 2, 3])
    assert [e.turn for d in found for e in d.events] == [1, 2, 3]


async def test_a_run_past_its_cleanup_after_is_neither_found_claimed_nor_recovered(
    store: Store,
) -> None:
    """MongoDB's TTL monitor deletes such a run within a minute or so; until it does, every
    query a request makes treats the run as deleted already."""
    clock = FakeClock()
    run = msgspec.structs.replace(waiting_run(clock), cleanup_after=clock() + timedelta(days=1))
    await store.runs.insert(run)
    assert await store.runs.find("acme", run.id, clock()) is not None
    clock.advance(24 * 3600)
    assert await store.runs.find("acme", run.id, clock()) is None
    late = claim(clock)
    renewed = clock() + timedelta(days=30)
    taken = await store.runs.claim_for_turn(
        "acme", run.id, run.workflow_id, late, cleanup_after=renewed
    )
    assert taken is None  # an expired run is not brought back by a turn

    claimed = msgspec.structs.replace(
        waiting_run(clock), cleanup_after=clock() + timedelta(hours=1)
    )
    await store.runs.insert(claimed)
    assert await store.runs.claim_for_turn(
        "acme", claimed.id, claimed.workflow_id, claim(clock), cleanup_after=renewed
    )
    stored = await store.runs.find("acme", claimed.id, clock())
    assert stored is not None and stored.cleanup_after == renewed  # the claim renewed it
    await store.database["runs"].update_one(
        {"_id": claimed.id}, {"$set": {"cleanup_after": clock() + timedelta(hours=1)}}
    )
    clock.advance(2 * 3600)  # its server died, and the run expired before anyone noticed
    assert await store.runs.expired_claims(clock(), 10) == []
    later = clock() + timedelta(seconds=30)
    assert await store.runs.take_over_interrupted("acme", claimed.id, clock(), "t2", later) is None


async def test_events_go_once_their_run_has_gone_and_are_renewed_while_it_lives(
    store: Store,
) -> None:
    clock = FakeClock()
    month = timedelta(days=30)

    async def archived_run(cleanup_after: datetime | None) -> RunDocument:
        run = msgspec.structs.replace(waiting_run(clock), cleanup_after=cleanup_after)
        await store.runs.insert(run)
        await store.runs.archive([(run, [1])])
        return run

    async def archived(run: RunDocument) -> list[TurnEventsDocument]:
        return await store.runs.archived_turns(run, [1])

    deleted = await archived_run(clock() + month)  # MongoDB's TTL monitor will take it
    expired = await archived_run(clock() + month)  # past its date, not deleted yet
    renewed = await archived_run(clock() + month)  # a later turn renews it
    forever = await archived_run(None)  # retention 0
    await store.database["runs"].delete_one({"_id": deleted.id})
    await store.database["runs"].update_one(
        {"_id": renewed.id}, {"$set": {"cleanup_after": clock() + 2 * month}}
    )
    assert await store.runs.expire_events(clock(), 100) == 0
    clock.advance(month.total_seconds())
    assert await store.runs.expire_events(clock(), 100) == 3
    assert await archived(deleted) == [] and await archived(expired) == []
    kept = await archived(renewed)
    assert [document.cleanup_after for document in kept] == [FakeClock.START + 2 * month]
    assert len(await archived(forever)) == 1
    assert await store.runs.expire_events(clock(), 100) == 0
    clock.advance(month.total_seconds())
    assert await store.runs.expire_events(clock(), 1) == 1
    assert await archived(renewed) == [] and len(await archived(forever)) == 1
