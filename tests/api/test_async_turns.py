"""Asynchronous turns (``Prefer: respond-async``): 202 at once, status polling with
progress, and a cancel racing the turn in the background."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.server import create_app
from tests.api.helpers import serving
from tests.api.llm_scripts import Scripted
from tests.api.test_streaming_and_stop import create_chat
from tests.support import YieldingDatabase, is_turn_commit, wait_until

ASYNC = {"Prefer": "respond-async"}


@pytest.fixture
def quick(settings: Settings) -> Settings:
    return Settings(api_keys=settings.api_keys, poll_ms=20)


async def poll(
    http: httpx.AsyncClient, url: str, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Poll a run's status as a client would, until ``done`` holds (at most 5 s)."""
    for _ in range(500):
        status: dict[str, Any] = (await http.get(url)).json()
        if done(status):
            return status
        await asyncio.sleep(0.01)
    raise AssertionError(f"never reached: {status}")


async def start_async(
    http: httpx.AsyncClient, workflow_id: str, run_id: str, message: str
) -> httpx.Response:
    return await http.post(
        f"/v1/workflows/{workflow_id}/execute",
        json={"run_id": run_id, "run_input": {"message": message}},
        headers=ASYNC,
    )


async def test_the_polling_pattern(quick: Settings, database: YieldingDatabase) -> None:
    llm = Scripted()
    async with serving(create_app(quick, database=database, llm=llm)) as http:  # type: ignore[arg-type]
        workflow_id, run_id = await create_chat(http)
        accepted = await start_async(http, workflow_id, run_id, "hello")
        assert accepted.status_code == 202, accepted.text
        body = accepted.json()
        base = f"http://testserver/v1/runs/{run_id}"
        assert body == {
            "run_id": run_id,
            "turn": 2,
            "status": "running",
            "status_url": base,
            "stream_url": f"{base}/stream",
            "cancel_url": f"{base}/cancel",
        }
        assert accepted.headers["location"] == base
        assert accepted.headers["preference-applied"] == "respond-async"

        # Refusals still come at once, before any 202.
        again = await start_async(http, workflow_id, run_id, "again")
        assert again.status_code == 409 and again.json()["code"] == "turn_in_progress"

        await asyncio.wait_for(llm.started.wait(), 5)
        running = await poll(http, base, lambda s: s["current_node"] == "think")
        assert running["status"] == "running" and running["turn"] == 1
        assert running["total_nodes"] == 2 and running["completed_nodes"] == 1
        assert running["progress"] == 50 and running["completed_at"] is None
        assert running["execution_source"] == "API" and running["retry_count"] == 0

        llm.say("Hi ", "there", None)
        waiting = await poll(http, base, lambda s: s["status"] != "running")
        assert waiting["status"] == "waiting_for_user_input" and waiting["turn"] == 2
        assert waiting["variables"] == {"q": "hello", "a": "Hi there"}
        assert waiting["completed_nodes"] == 2 and waiting["progress"] == 99
        events = (await http.get(f"{base}/events", params={"turn": 2})).json()["events"]
        assert [e["data"]["text"] for e in events if e["type"] == "llm_completed"] == ["Hi there"]


async def test_progress_counts_each_node_once_and_reaches_100_at_the_end(
    quick: Settings, database: YieldingDatabase
) -> None:
    loop = {
        "start": "count",
        "nodes": {
            "count": {"type": "set", "values": {"n": "n + 1"}, "next": "check"},
            "check": {
                "type": "switch",
                "cases": [{"when": "n < 3", "next": "count"}, {"when": "n > 100", "next": "big"}],
                "default": "ask",
            },
            "ask": {"type": "input", "save_as": "x", "next": "done"},
            "done": {"type": "end", "output": {}},
            "big": {"type": "end", "output": {}},  # never taken
        },
    }
    async with serving(create_app(quick, database=database)) as http:
        workflow_id = (
            await http.post("/v1/workflows", json={"name": "loop", "definition": loop})
        ).json()["workflow_id"]
        started = await http.post(f"/v1/workflows/{workflow_id}/execute", json={"inputs": {"n": 0}})
        run_id = started.json()["run_id"]
        run = (await http.get(f"/v1/runs/{run_id}")).json()
        # count and check ran three times each, but count once: 2 of 5 nodes.
        assert (run["completed_nodes"], run["total_nodes"], run["progress"]) == (2, 5, 40)
        await http.post(
            f"/v1/workflows/{workflow_id}/execute",
            json={"run_id": run_id, "run_input": {"message": "x"}},
        )
        run = (await http.get(f"/v1/runs/{run_id}")).json()
        assert run["status"] == "completed" and run["progress"] == 100
        assert run["completed_nodes"] == 4 and run["completed_at"] is not None


async def test_the_execution_source_comes_from_a_header(
    quick: Settings, database: YieldingDatabase
) -> None:
    async with serving(create_app(quick, database=database)) as http:
        workflow_id, _ = await create_chat(http)
        url = f"/v1/workflows/{workflow_id}/execute"
        started = await http.post(url, json={}, headers={"X-Execution-Source": "playground"})
        run = (await http.get(f"/v1/runs/{started.json()['run_id']}")).json()
        assert run["execution_source"] == "PLAYGROUND"
        bad = await http.post(url, json={}, headers={"X-Execution-Source": "no spaces!"})
        assert bad.status_code == 400 and bad.json()["code"] == "validation_error"
        assert bad.json()["errors"][0]["path"] == "headers.X-Execution-Source"


async def test_a_stop_is_never_deferred(quick: Settings, database: YieldingDatabase) -> None:
    async with serving(create_app(quick, database=database)) as http:
        workflow_id, run_id = await create_chat(http)
        stop = await http.post(
            f"/v1/workflows/{workflow_id}/execute",
            json={"run_id": run_id, "run_input": {"command": "stop"}},
            headers=ASYNC,
        )
        assert stop.status_code == 200 and stop.json()["status"] == "cancelled"


Cancel = Callable[[httpx.AsyncClient, str], Awaitable[httpx.Response]]


async def delete(http: httpx.AsyncClient, run_id: str) -> httpx.Response:
    return await http.delete(f"/v1/runs/{run_id}")


async def post_cancel(http: httpx.AsyncClient, run_id: str) -> httpx.Response:
    return await http.post(f"/v1/runs/{run_id}/cancel")


@pytest.mark.parametrize("cancel", [delete, post_cancel])
async def test_a_cancel_racing_a_background_turn_at_its_commit_wins(
    quick: Settings, database: YieldingDatabase, cancel: Cancel
) -> None:
    llm = Scripted()
    async with serving(create_app(quick, database=database, llm=llm)) as http:  # type: ignore[arg-type]
        workflow_id, run_id = await create_chat(http)
        database.hold("runs", "update_one", is_turn_commit)
        assert (await start_async(http, workflow_id, run_id, "hello")).status_code == 202
        llm.say("Hi", None)
        await wait_until(lambda: database.waiting > 0)  # the turn waits at its commit
        cancelled, _ = await asyncio.gather(cancel(http, run_id), _release_soon(database))
        assert cancelled.status_code == 200
        assert cancelled.json()["previous_status"] == "running"
        run = await poll(http, f"/v1/runs/{run_id}", lambda s: s["status"] != "running")
        assert (
            run["status"] == "cancelled" and "a" not in run["variables"]
        )  # nothing of the turn was stored after the cancel
        events = (await http.get(f"/v1/runs/{run_id}/events")).json()["events"]
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events[-1]["type"] == "run_cancelled" and events[-1]["turn"] == 2
        assert "llm_completed" not in [e["type"] for e in events]
        again = await cancel(http, run_id)
        assert again.status_code == 409 and again.json()["code"] == "run_terminal"


async def _release_soon(database: YieldingDatabase) -> None:
    for _ in range(20):  # the cancel's read and write go first
        await asyncio.sleep(0)
    database.release()
