"""Retention: every run carries ``cleanup_after``, renewed by each turn; past it, the run is
gone for every request (before MongoDB's TTL monitor gets to it), and its archived events
go with it, never before. Time is the injected clock's; each test runs on the embedded
store and through PyMongo (the wire double, or the MongoDB of MONGODB_URI), and holds
whether or not a TTL monitor deletes anything meanwhile: the clock starts far in the
future (``FakeClock``), and what is checked after expiry is what a deleted run gives."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest
from bson import ObjectId
from litestar import Litestar

from app.config import ConfigError, Settings
from app.server import create_app
from app.store.database import Database
from app.store.store import Store
from tests.api.helpers import serving, turn
from tests.support import BOOKING, FakeClock

DAY = 24 * 3600


def at(text: str) -> datetime:
    """A time as the API writes it."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def cleanup_after(http: httpx.AsyncClient, run_id: str) -> datetime:
    return at((await status(http, run_id))["cleanup_after"])


@asynccontextmanager
async def tandem(
    settings: Settings, database: Database, clock: FakeClock, **changes: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Litestar, str]]:
    """A server on ``database`` with ``changes`` to its settings, and the booking workflow."""
    app = create_app(msgspec.structs.replace(settings, **changes), database=database, clock=clock)
    async with serving(app) as http:
        response = await http.post("/v1/workflows", json={"name": "B", "definition": BOOKING})
        assert response.status_code == 201, response.text
        yield http, app, response.json()["workflow_id"]


async def status(http: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    response = await http.get(f"/v1/runs/{run_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def listed(http: httpx.AsyncClient, path: str = "/v1/runs", **params: Any) -> list[str]:
    response = await http.get(path, params=params)
    assert response.status_code == 200, response.text
    return [item["run_id"] for item in response.json()["items"]]


async def test_a_run_carries_cleanup_after_and_each_turn_renews_it(
    settings: Settings, database_per_backend: Database, clock: FakeClock
) -> None:
    async with tandem(settings, database_per_backend, clock) as (http, _, workflow_id):
        started = clock()
        run_id = (await turn(http, workflow_id))["run_id"]  # type: ignore[arg-type]
        run = await status(http, run_id)
        assert at(run["cleanup_after"]) == started + timedelta(days=30)
        items = (await http.get("/v1/runs")).json()["items"]
        assert items[0]["cleanup_after"] == run["cleanup_after"]

        clock.advance(29 * DAY)  # a turn the day before: 30 days from that turn
        await turn(http, workflow_id, run_id, "Ann")  # type: ignore[arg-type]
        assert await cleanup_after(http, run_id) == clock() + timedelta(days=30)
        stored = await database_per_backend["runs"].find_one({"_id": ObjectId(run_id)})
        assert stored is not None and stored["cleanup_after"] == clock() + timedelta(days=30)

        clock.advance(20 * DAY)  # a stop is a turn too: the cancelled run is kept 30 days
        cancelled = await http.post(f"/v1/runs/{run_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert await cleanup_after(http, run_id) == clock() + timedelta(days=30)


async def test_a_run_past_cleanup_after_is_gone_for_every_request(
    settings: Settings, database_per_backend: Database, clock: FakeClock
) -> None:
    async with tandem(settings, database_per_backend, clock) as (http, _, workflow_id):
        idle = (await turn(http, workflow_id))["run_id"]  # type: ignore[arg-type]
        renewed = (await turn(http, workflow_id))["run_id"]  # type: ignore[arg-type]
        clock.advance(10 * DAY)
        await turn(http, workflow_id, renewed, "Bob")  # type: ignore[arg-type]

        clock.advance(20 * DAY - 0.001)  # day 30 less 1 ms: the idle run's last moment
        assert (await status(http, idle))["status"] == "waiting_for_user_input"
        assert await listed(http) == [renewed, idle]

        clock.advance(0.001)  # its cleanup_after: from now on, as if deleted
        gone = [
            http.get(f"/v1/runs/{idle}"),
            http.get(f"/v1/runs/{idle}/events"),
            http.get(f"/v1/runs/{idle}/events", params={"turn": 1}),
            http.get(f"/v1/runs/{idle}/stream"),
            http.post(
                f"/v1/workflows/{workflow_id}/execute",
                json={"run_id": idle, "run_input": {"message": "Ann"}},
            ),
            http.post(
                f"/v1/workflows/{workflow_id}/execute",
                json={"run_id": idle, "run_input": {"command": "stop"}},
                headers={"Prefer": "respond-async"},
            ),
            http.post(
                f"/v1/workflows/{workflow_id}/execute",
                json={"run_id": idle, "run_input": {"message": "Ann"}},
                headers={"Accept": "text/event-stream"},
            ),
            http.delete(f"/v1/runs/{idle}"),
            http.post(f"/v1/runs/{idle}/cancel"),
        ]
        for request in gone:
            response = await request
            assert response.status_code == 404, (response.request.url, response.text)
            assert response.json()["code"] == "not_found"
        assert await listed(http) == [renewed]
        assert await listed(http, f"/v1/workflows/{workflow_id}/runs") == [renewed]
        assert await listed(http, status="waiting_for_user_input") == [renewed]
        # The renewed run lives on, and its next turn renews it again.
        answer = await turn(http, workflow_id, renewed, "4")  # type: ignore[arg-type]
        assert answer["status"] == "paused"

        clock.advance(30 * DAY)  # 30 days after that turn
        assert (await http.get(f"/v1/runs/{renewed}")).status_code == 404
        assert await listed(http) == []


async def test_retention_zero_keeps_runs_forever(
    settings: Settings, database_per_backend: Database, clock: FakeClock
) -> None:
    async with tandem(settings, database_per_backend, clock, run_retention_days=0) as (
        http,
        _,
        workflow_id,
    ):
        run_id = (await turn(http, workflow_id))["run_id"]  # type: ignore[arg-type]
        assert (await status(http, run_id))["cleanup_after"] is None
        clock.advance(3650 * DAY)
        answer = await turn(http, workflow_id, run_id, "Ann")  # type: ignore[arg-type]
        assert answer["turn"] == 2
        assert (await status(http, run_id))["cleanup_after"] is None
        assert await listed(http) == [run_id]
    stored = await database_per_backend["runs"].find_one({"_id": ObjectId(run_id)})
    assert stored is not None and stored["cleanup_after"] is None


def test_the_retention_setting() -> None:
    assert Settings.from_env({}).run_retention == timedelta(days=30)
    assert Settings.from_env({"TANDEM_RUN_RETENTION_DAYS": "0"}).run_retention is None
    half = Settings.from_env({"TANDEM_RUN_RETENTION_DAYS": "0.5"}).run_retention
    assert half == timedelta(hours=12)
    for bad in ("-1", "soon", "36501", "nan", "inf"):
        with pytest.raises(ConfigError, match="TANDEM_RUN_RETENTION_DAYS"):
            Settings.from_env({"TANDEM_RUN_RETENTION_DAYS": bad})


async def test_runs_are_deleted_by_a_ttl_index_and_events_are_not(
    database_per_backend: Database,
) -> None:
    """MongoDB deletes a run at its cleanup_after (expireAfterSeconds 0); archived events
    have no TTL of their own (renewing one on every turn would cost too much): they are
    indexed for the sweep that deletes them once their run has gone."""
    await Store(database_per_backend).ensure_indexes()
    runs = await database_per_backend["runs"].index_information()
    ttl = [index for index in runs.values() if index["key"] == [("cleanup_after", 1)]]
    assert len(ttl) == 1 and ttl[0]["expireAfterSeconds"] == 0
    events = await database_per_backend["run_events"].index_information()
    swept = [index for index in events.values() if index["key"] == [("cleanup_after", 1)]]
    assert len(swept) == 1 and "expireAfterSeconds" not in swept[0]


async def test_a_run_stored_before_retention_loads_and_its_next_turn_dates_it(
    settings: Settings, database_per_backend: Database, clock: FakeClock
) -> None:
    async with tandem(settings, database_per_backend, clock) as (http, _, workflow_id):
        run_id = (await turn(http, workflow_id))["run_id"]  # type: ignore[arg-type]
        await database_per_backend["runs"].update_one(
            {"_id": ObjectId(run_id)}, {"$unset": {"cleanup_after": ""}}
        )
        assert (await status(http, run_id))["cleanup_after"] is None
        assert await listed(http) == [run_id]
        clock.advance(100 * DAY)  # no date: kept until a turn gives it one
        await turn(http, workflow_id, run_id, "Ann")  # type: ignore[arg-type]
        assert await cleanup_after(http, run_id) == clock() + timedelta(days=30)


async def test_archived_events_go_with_their_run_and_never_before(
    settings: Settings, database_per_backend: Database, clock: FakeClock
) -> None:
    """A run renewed by later turns keeps the events archived before (the sweep gives them
    its new date); a run past its cleanup_after loses them at the next sweep."""
    events = database_per_backend["run_events"]

    async def archived(run_id: str) -> list[int]:
        found = events.find({"run_id": ObjectId(run_id)}, {"turn": 1}).sort("turn", 1)
        return [raw["turn"] for raw in await found.to_list(None)]

    async with tandem(settings, database_per_backend, clock) as (http, app, workflow_id):
        runs = app.state.runs
        idle = (await turn(http, workflow_id))["run_id"]  # type: ignore[arg-type]
        renewed = (await turn(http, workflow_id))["run_id"]  # type: ignore[arg-type]
        # Each turn archived before the next (archives wait a moment to share an insert,
        # and then carry the run's date as it is then).
        await runs.executor.drain()
        for message in ("Ann", "4"):  # days 10 and 20: the run's cleanup_after is day 50
            clock.advance(10 * DAY)
            await turn(http, workflow_id, renewed, message)  # type: ignore[arg-type]
            await runs.executor.drain()
        assert await archived(idle) == [1]
        assert await archived(renewed) == [1, 2, 3]
        assert await runs.events_sweeper.sweep() == 0  # nothing due yet

        clock.advance(10 * DAY)  # day 30: the idle run has gone; turn 1 of the other is due
        assert await runs.events_sweeper.sweep() == 2
        assert await archived(idle) == []
        assert await archived(renewed) == [1, 2, 3]
        first = await events.find_one({"run_id": ObjectId(renewed), "turn": 1})
        assert first is not None
        assert first["cleanup_after"] == await cleanup_after(http, renewed)
        assert await runs.events_sweeper.sweep() == 0  # renewed once, not at every sweep

        clock.advance(10 * DAY)  # day 40: turn 2's date, renewed the same way
        assert await runs.events_sweeper.sweep() == 1
        seqs = [e["seq"] for e in (await http.get(f"/v1/runs/{renewed}/events")).json()["events"]]
        assert seqs == list(range(1, len(seqs) + 1))

        clock.advance(10 * DAY)  # day 50: the run's own cleanup_after
        assert await runs.events_sweeper.sweep() == 3
        assert await archived(renewed) == []
