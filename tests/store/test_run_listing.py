"""Listing runs in the store: every filter against a plain reading of the same runs, times
at the edges of what ids and BSON hold, and (on a real MongoDB) the query plans."""

import itertools
import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId
from pymongo import DESCENDING

from app.engine.state import RunStatus
from app.store.database import Database
from app.store.documents import RUN_SUMMARY_FIELDS, Claim, CommittedState, RunDocument
from app.store.runs import RunFilter, _listing_query
from app.store.store import Store
from tests.support import FakeClock

# In the future (see FakeClock): a real MongoDB's TTL monitor must not delete these runs.
START = FakeClock.START
# When the listings below are read: a few runs are past their cleanup_after by then.
ALIVE_AT = START + timedelta(days=1)
WORKFLOWS = [ObjectId(f"{n:024x}") for n in (1, 2, 3)]
STATUSES = [
    RunStatus.WAITING_FOR_USER_INPUT,
    RunStatus.PAUSED,
    RunStatus.COMPLETED,
    RunStatus.FAILED,
    RunStatus.CANCELLED,
]
_counter = itertools.count()


@pytest.fixture
async def store(database_per_backend: Database) -> Store:
    store = Store(database_per_backend)
    await store.ensure_indexes()
    return store


def id_made_at(moment: datetime) -> ObjectId:
    """An id as one process makes them: its second, then always the same five bytes and
    a counter, so that ids made one after the other sort in that order."""
    second = int(moment.timestamp() // 1)
    return ObjectId(second.to_bytes(4, "big") + b"tndem" + next(_counter).to_bytes(3, "big"))


def stored_run(
    tenant: str,
    workflow_id: ObjectId,
    status: RunStatus,
    created_at: datetime,
    *,
    claimed: bool = False,
    id_made: datetime | None = None,
    cleanup_after: datetime | None = None,
) -> RunDocument:
    claim = None
    if claimed:
        claim = Claim(
            token="t",
            message="hi",
            data=None,
            started_at=created_at,
            expires_at=created_at + timedelta(seconds=30),
            current_node="ask",
            visited_nodes=["greet", "ask"],
        )
    return RunDocument(
        id=id_made_at(id_made or created_at),
        tenant=tenant,
        workflow_id=workflow_id,
        version=0,
        revision=0,
        created_at=created_at,
        execution_source="API",
        total_nodes=4,
        claim=claim,
        log=[],
        visited_nodes=["greet"],
        cleanup_after=cleanup_after,
        state=CommittedState(
            status=status,
            turn=1,
            seq=1,
            current_node="ask",
            variables={"big": "x" * 1000},
            history=[],
            waiting_for=None,
            output=None,
            error=None,
            updated_at=created_at,
        ),
    )


def crowd() -> list[RunDocument]:
    """Runs 10 s apart over three workflows and every status between turns, some with a
    turn executing (only runs that wait can be claimed), some kept forever and some past
    their cleanup_after at ``ALIVE_AT``, and another tenant's among them."""
    runs = []
    for index in range(60):
        status = STATUSES[index % len(STATUSES)]
        claimed = index % 7 == 0 and status in (STATUSES[0], STATUSES[1])
        created = START + timedelta(seconds=10 * index)
        cleanup_after = (
            None
            if index % 13 == 0
            else created + timedelta(hours=1)
            if index % 11 == 5
            else created + timedelta(days=30)
        )
        runs.append(
            stored_run(
                "acme",
                WORKFLOWS[index % 3],
                status,
                created,
                claimed=claimed,
                cleanup_after=cleanup_after,
            )
        )
        if index % 6 == 0:
            runs.append(stored_run("globex", WORKFLOWS[0], status, created))
    return runs


def shown(run: RunDocument, tenant: str, run_filter: RunFilter) -> bool:
    """What a listing means, read plainly."""
    status = RunStatus.RUNNING if run.claim is not None else run.state.status
    return (
        run.tenant == tenant
        and run_filter.workflow_id in (None, run.workflow_id)
        and run_filter.status in (None, status)
        and (run_filter.created_after is None or run.created_at >= run_filter.created_after)
        and (run_filter.created_before is None or run.created_at < run_filter.created_before)
        and (run_filter.alive_at is None or not run.expired(run_filter.alive_at))
    )


def filters(runs: list[RunDocument]) -> Iterator[RunFilter]:
    """Every combination of the filters, with times that fall on a run and between two; as
    the API lists them, without the runs past their cleanup_after."""
    on_a_run = runs[20].created_at
    between = runs[50].created_at + timedelta(seconds=4, microseconds=1)
    for workflow_id, status, after, before in itertools.product(
        (None, WORKFLOWS[1]),
        (None, RunStatus.RUNNING, RunStatus.WAITING_FOR_USER_INPUT, RunStatus.COMPLETED),
        (None, on_a_run),
        (None, between),
    ):
        yield RunFilter(
            workflow_id=workflow_id,
            status=status,
            created_after=after,
            created_before=before,
            alive_at=ALIVE_AT,
        )


async def every_page(
    store: Store, tenant: str, run_filter: RunFilter, limit: int
) -> list[list[ObjectId]]:
    pages: list[list[ObjectId]] = []
    before = None
    while True:
        page = await store.runs.list_page(tenant, run_filter, limit, before)
        assert len(page) <= limit
        if not page:
            return pages
        pages.append([run.id for run in page])
        before = page[-1].id


async def test_every_filter_lists_what_a_plain_reading_finds(store: Store) -> None:
    runs = crowd()
    for run in runs:
        await store.runs.insert(run)
    newest_first = runs[::-1]
    for run_filter in filters(runs):
        expected = [run.id for run in newest_first if shown(run, "acme", run_filter)]
        pages = await every_page(store, "acme", run_filter, limit=7)
        assert [run_id for page in pages for run_id in page] == expected, run_filter
    theirs = [run.id for run in newest_first if run.tenant == "globex"]
    assert await every_page(store, "globex", RunFilter(), limit=100) == [theirs]


async def test_a_summary_reads_where_the_run_stands(store: Store) -> None:
    waiting = stored_run("acme", WORKFLOWS[0], RunStatus.WAITING_FOR_USER_INPUT, START)
    running = stored_run("acme", WORKFLOWS[0], RunStatus.PAUSED, START, claimed=True)
    for run in (waiting, running):
        await store.runs.insert(run)
    newest, oldest = await store.runs.list_page("acme", RunFilter(), 10, None)
    assert (newest.id, oldest.id) == (running.id, waiting.id)
    assert oldest.claim is None and oldest.state.status == RunStatus.WAITING_FOR_USER_INPUT
    assert newest.claim is not None and newest.claim.visited_nodes == ["greet", "ask"]
    assert (newest.total_nodes, newest.visited_nodes, newest.created_at) == (4, ["greet"], START)


async def test_a_run_whose_id_was_made_in_the_next_second_is_listed_by_its_time(
    store: Store,
) -> None:
    """A run's id is made just after its created_at: across a second's edge, the id holds
    the next second. created_at decides, to the millisecond."""
    edge = START + timedelta(seconds=1)
    late = stored_run(
        "acme",
        WORKFLOWS[0],
        RunStatus.PAUSED,
        edge - timedelta(milliseconds=1),
        id_made=edge + timedelta(microseconds=10),
    )
    on_time = stored_run("acme", WORKFLOWS[0], RunStatus.PAUSED, edge)
    for run in (late, on_time):
        await store.runs.insert(run)

    async def listed(**times: datetime) -> list[ObjectId]:
        page = await store.runs.list_page("acme", RunFilter(**times), 10, None)
        return [run.id for run in page]

    assert await listed(created_before=edge) == [late.id]
    assert await listed(created_after=edge) == [on_time.id]
    assert await listed(created_after=edge - timedelta(milliseconds=1)) == [on_time.id, late.id]
    # A time finer than MongoDB keeps: created_at (to the ms) is before edge - 0.5 ms.
    half = edge - timedelta(microseconds=500)
    assert await listed(created_after=half) == [on_time.id]
    assert await listed(created_before=half) == [late.id]


@pytest.mark.parametrize(
    ("after", "before", "listed"),
    [
        ("0001-01-01T00:00:00+23:59", None, True),  # before year 1 in UTC
        ("1969-12-31T23:59:59Z", None, True),  # before any id's second
        (None, "2106-02-07T06:28:16Z", True),  # after any id's second
        (None, "9999-12-31T23:59:59.999999-23:59", True),  # after year 9999 in UTC
        ("9999-12-31T23:59:59.999999-23:59", None, False),
        ("2200-01-01T00:00:00Z", None, False),
        (None, "0001-01-01T00:00:00+23:59", False),
        (None, "1969-12-31T23:59:59Z", False),
        ("1969-12-31T23:59:59Z", "2106-02-07T06:28:16Z", True),
    ],
)
async def test_times_beyond_what_ids_and_bson_hold(
    store: Store, after: str | None, before: str | None, listed: bool
) -> None:
    run = stored_run("acme", WORKFLOWS[0], RunStatus.PAUSED, START)
    await store.runs.insert(run)
    run_filter = RunFilter(
        created_after=datetime.fromisoformat(after) if after else None,
        created_before=datetime.fromisoformat(before) if before else None,
    )
    page = await store.runs.list_page("acme", run_filter, 10, None)
    assert [found.id for found in page] == ([run.id] if listed else [])


def plan_stages(plan: Any) -> Iterator[dict[str, Any]]:
    """Every stage of an explained plan, classic or slot-based (``queryPlan``), however
    nested (``inputStage``, ``inputStages``)."""
    if isinstance(plan, dict):
        if "stage" in plan:
            yield plan
        for value in plan.values():
            yield from plan_stages(value)
    elif isinstance(plan, list):
        for value in plan:
            yield from plan_stages(value)


@pytest.mark.skipif(
    not os.environ.get("MONGODB_URI"), reason="query plans need a real MongoDB (MONGODB_URI)"
)
async def test_every_filter_reads_only_what_its_page_shows(store: Store) -> None:
    """On MongoDB: whatever the filters, a page is read from an index in the order of the
    sort (no collection scan, no sort in memory), and it examines about as many index
    keys and runs as it shows. The few extra are the runs with a turn executing, which a
    status filter passes over (their status is ``running``), the runs past their
    cleanup_after that MongoDB has not deleted yet (a minute at most, usually), and one
    key past the page."""
    runs = crowd()
    for run in runs:
        await store.runs.insert(run)
    claimed = sum(run.claim is not None for run in runs)
    claimed += sum(run.expired(ALIVE_AT) for run in runs)  # passed over the same way
    collection = store.runs._runs  # the query list_page sends, explained
    limit = 5
    cursors = (None, runs[40].id)
    for run_filter, before in itertools.product(filters(runs), cursors):
        query = _listing_query("acme", run_filter, before)
        assert query is not None
        cursor = collection.find(query, RUN_SUMMARY_FIELDS).sort("_id", DESCENDING).limit(limit)
        explained = await cursor.explain()
        if not explained["queryPlanner"]["winningPlan"]:
            pytest.skip("this server has no query plans: the wire double, not MongoDB")
        stages = list(plan_stages(explained["queryPlanner"]["winningPlan"]))
        names = {stage["stage"] for stage in stages}
        indexes = {stage.get("indexName") for stage in stages if stage["stage"] == "IXSCAN"}
        stats = explained["executionStats"]
        context = (run_filter, before, names, indexes, stats["totalKeysExamined"])
        assert "IXSCAN" in names and not names & {"COLLSCAN", "SORT"}, context
        returned = stats["nReturned"]
        assert stats["totalDocsExamined"] <= returned + claimed, context
        assert stats["totalKeysExamined"] <= returned + claimed + 1, context
