"""Races on one run, made certain by holding a turn open at its commit.

mongomock-motor never yields to the event loop, so the database is wrapped to yield
around every call and to hold a turn's commit until the test releases it.
"""

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest

from tests.api.helpers import turn
from tests.support import BOOKING, FakeClock, YieldingDatabase, flow, is_turn_commit, wait_until

Racing = Callable[[], AbstractAsyncContextManager[httpx.AsyncClient]]


async def create_booking(client: httpx.AsyncClient) -> str:
    response = await client.post("/v1/workflows", json={"name": "Booking", "definition": BOOKING})
    workflow_id: str = response.json()["workflow_id"]
    return workflow_id


def post_turn(
    client: httpx.AsyncClient, workflow_id: str, **body: Any
) -> "asyncio.Task[httpx.Response]":
    return asyncio.create_task(client.post(f"/v1/workflows/{workflow_id}/execute", json=body))


async def stored_events(client: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = (await client.get(f"/v1/runs/{run_id}/events")).json()["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "seq has gaps"
    return events


async def turn_held_at_its_commit(
    client: httpx.AsyncClient,
    database: YieldingDatabase,
    commit: Callable[[tuple[Any, ...]], bool] = is_turn_commit,
) -> "tuple[str, str, asyncio.Task[httpx.Response]]":
    """A booking run whose turn answering "Ann" is executing, held just before its commit
    (the runs.update_one call ``commit`` matches) until ``database.release()``: the
    workflow, the run and the request in flight."""
    booking_id = await create_booking(client)
    run_id: str = (await turn(client, booking_id))["run_id"]  # type: ignore[arg-type]
    database.hold("runs", "update_one", commit)
    in_flight = post_turn(client, booking_id, run_id=run_id, run_input={"message": "Ann"})
    await wait_until(lambda: database.waiting == 1)
    return booking_id, run_id, in_flight


async def crash_mid_turn(
    client: httpx.AsyncClient, database: YieldingDatabase, workflow_id: str, run_id: str
) -> None:
    """A turn claims the run, then its server dies before committing: the claim stays."""
    database.hold("runs", "update_one", is_turn_commit)
    crashed = post_turn(client, workflow_id, run_id=run_id, run_input={"message": "Ann"})
    await wait_until(lambda: database.waiting == 1)
    crashed.cancel()
    await asyncio.gather(crashed, return_exceptions=True)
    database.release()


async def crashed_run(client: httpx.AsyncClient, database: YieldingDatabase) -> tuple[str, str]:
    """A booking run waiting for a name, whose turn answering "Ann" crashed mid-way."""
    booking_id = await create_booking(client)
    run_id: str = (await turn(client, booking_id))["run_id"]  # type: ignore[arg-type]
    await crash_mid_turn(client, database, booking_id, run_id)
    return booking_id, run_id


@pytest.mark.parametrize(
    "status_meanwhile",
    [
        pytest.param("running", marks=pytest.mark.claiming, id="claimed"),
        # On a run this process cached, the winner claims nothing: the run shows its
        # waiting status until the commit, and the others are refused here at once.
        pytest.param("waiting_for_user_input", id="cached"),
    ],
)
async def test_twenty_turns_at_once_one_executes_the_others_get_409(
    racing: Racing, database: YieldingDatabase, status_meanwhile: str
) -> None:
    async with racing() as client:
        booking_id = await create_booking(client)
        run_id = (await turn(client, booking_id))["run_id"]  # type: ignore[arg-type]
        database.hold("runs", "update_one", is_turn_commit)
        tasks = [
            post_turn(client, booking_id, run_id=run_id, run_input={"message": f"guest{i}"})
            for i in range(20)
        ]
        # Nineteen answer while the winner is held inside its turn: the overlap is certain.
        await wait_until(lambda: sum(task.done() for task in tasks) == 19 and database.waiting == 1)
        during = (await client.get(f"/v1/runs/{run_id}")).json()
        assert during["status"] == status_meanwhile and during["turn"] == 1
        database.release()
        responses = await asyncio.gather(*tasks)

        assert sorted(r.status_code for r in responses) == [200] + [409] * 19
        assert {r.json()["code"] for r in responses if r.status_code == 409} == {"turn_in_progress"}
        winner = next(r.json() for r in responses if r.status_code == 200)
        said = next(e for e in winner["events"] if e["type"] == "input_received")["data"]["message"]
        run = (await client.get(f"/v1/runs/{run_id}")).json()
        assert run["turn"] == 2 and run["status"] == "waiting_for_user_input"
        assert run["variables"] == {"name": said}
        events = await stored_events(client, run_id)
        assert [e["type"] for e in events].count("input_received") == 1
        assert events[-len(winner["events"]) :] == winner["events"]


@pytest.mark.claiming
async def test_stop_wins_over_a_turn_in_flight(racing: Racing, database: YieldingDatabase) -> None:
    async with racing() as client:
        booking_id, run_id, in_flight = await turn_held_at_its_commit(client, database)

        resume = await client.post(
            f"/v1/workflows/{booking_id}/execute",
            json={"run_id": run_id, "run_input": {"message": "Bob"}},
        )
        assert resume.status_code == 409 and resume.json()["code"] == "turn_in_progress"
        stop = await client.post(
            f"/v1/workflows/{booking_id}/execute",
            json={"run_id": run_id, "run_input": {"command": "stop"}},
        )
        assert stop.status_code == 200
        assert stop.json()["status"] == "cancelled" and stop.json()["turn"] == 2

        database.release()
        interrupted = await in_flight
        assert interrupted.status_code == 200
        answer = interrupted.json()
        assert answer["status"] == "cancelled" and answer["is_terminal"]
        assert [e["type"] for e in answer["events"]] == ["run_cancelled"]

        run = (await client.get(f"/v1/runs/{run_id}")).json()
        assert run["status"] == "cancelled" and "name" not in run["variables"]
        events = await stored_events(client, run_id)
        assert events[-1]["type"] == "run_cancelled" and events[-1]["turn"] == 2
        assert "input_received" not in [e["type"] for e in events]


@pytest.mark.claiming
async def test_a_turn_interrupted_by_a_crash_runs_again_after_its_lease(
    racing: Racing, database: YieldingDatabase, clock: FakeClock
) -> None:
    async with racing() as client:
        booking_id, run_id = await crashed_run(client, database)

        clock.advance(29)
        early = await turn(client, booking_id, run_id, "4", expect=409)  # type: ignore[arg-type]
        assert early["code"] == "turn_in_progress"

        clock.advance(2)  # past the 30 s lease
        answer = await turn(client, booking_id, run_id, "4")  # type: ignore[arg-type]
        assert answer["turn"] == 3 and answer["status"] == "paused"
        run = (await client.get(f"/v1/runs/{run_id}")).json()
        assert run["variables"] == {
            "name": "Ann",
            "size": "4",
        }  # the crashed turn's input is not lost
        events = await stored_events(client, run_id)
        assert [e["turn"] for e in events if e["type"] == "input_received"] == [2, 3]


@pytest.mark.claiming
async def test_reading_a_run_recovers_its_interrupted_turn(
    racing: Racing, database: YieldingDatabase, clock: FakeClock
) -> None:
    async with racing() as client:
        _, run_id = await crashed_run(client, database)
        assert (await client.get(f"/v1/runs/{run_id}")).json()["status"] == "running"
        clock.advance(31)
        run = (await client.get(f"/v1/runs/{run_id}")).json()
        assert run["status"] == "waiting_for_user_input" and run["turn"] == 2
        assert run["variables"] == {"name": "Ann"}
        await stored_events(client, run_id)


@pytest.mark.claiming
async def test_a_stop_after_a_crash_cancels_without_replaying(
    racing: Racing, database: YieldingDatabase, clock: FakeClock
) -> None:
    async with racing() as client:
        booking_id, run_id = await crashed_run(client, database)
        stopped = await turn(client, booking_id, run_id, run_input={"command": "stop"})  # type: ignore[arg-type]
        assert stopped["status"] == "cancelled" and stopped["turn"] == 2
        clock.advance(31)
        run = (await client.get(f"/v1/runs/{run_id}")).json()
        assert run["status"] == "cancelled" and run["variables"] == {}


async def test_concurrent_publishes_get_distinct_versions(racing: Racing) -> None:
    async with racing() as client:
        booking_id = await create_booking(client)
        definition = flow(("end", {"type": "end"}))
        responses = await asyncio.gather(
            *(
                client.post(f"/v1/workflows/{booking_id}/versions", json={"definition": definition})
                for _ in range(5)
            )
        )
        assert sorted(r.json()["version"] for r in responses) == [1, 2, 3, 4, 5]
        assert (await client.get(f"/v1/workflows/{booking_id}")).json()["latest_version"] == 5
