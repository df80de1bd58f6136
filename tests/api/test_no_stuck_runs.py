"""No run is left unusable: a turn that breaks, a turn that keeps killing its server,
and a streaming client that leaves at once all end with a run that answers."""

import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
from bson import ObjectId
from bson.errors import InvalidDocument

from app.config import Settings
from app.server import create_app
from tests.api.helpers import Client, serving, turn
from tests.api.test_concurrency import crashed_run, stored_events
from tests.conftest import KEY_A
from tests.support import BOOKING, FakeClock, YieldingDatabase, flow, is_turn_commit, wait_until

Racing = Callable[[], AbstractAsyncContextManager[httpx.AsyncClient]]

SURROGATE = flow(
    ("ask", {"type": "input", "prompt": "Say anything", "save_as": "x", "next": "say"}),
    ("say", {"type": "message", "text": "{{ '\\ud800' }}", "next": "end"}),
    ("end", {"type": "end"}),
)


async def publish(client: Any, definition: dict[str, Any]) -> str:
    response = await client.post("/v1/workflows", json={"name": "w", "definition": definition})
    assert response.status_code == 201, response.text
    workflow_id: str = response.json()["workflow_id"]
    return workflow_id


async def test_a_template_rendering_a_lone_surrogate_fails_the_run_cleanly(client: Client) -> None:
    workflow_id = await publish(client, SURROGATE)
    run_id = (await turn(client, workflow_id))["run_id"]
    answer = await turn(client, workflow_id, run_id, "hi")
    assert answer["status"] == "failed" and answer["is_terminal"]
    failed = answer["events"][-1]
    assert failed["type"] == "run_failed" and failed["node_id"] == "say"
    assert "lone surrogate" in failed["data"]["error"]
    run = (await client.get(f"/v1/runs/{run_id}")).json()
    assert run["status"] == "failed" and run["variables"] == {"x": "hi"}
    again = await turn(client, workflow_id, run_id, "hi", expect=409)
    assert again["code"] == "run_terminal"


async def test_a_streamed_turn_that_fails_still_ends_with_its_result(client: Client) -> None:
    workflow_id = await publish(client, SURROGATE)
    run_id = (await turn(client, workflow_id))["run_id"]
    response = await client.post(
        f"/v1/workflows/{workflow_id}/execute",
        json={"run_id": run_id, "run_input": {"message": "hi"}},
        headers={"Accept": "text/event-stream"},
    )
    blocks = [b for b in response.text.replace("\r\n", "\n").split("\n\n") if b.strip()]
    last = dict(line.split(": ", 1) for line in blocks[-1].split("\n") if ": " in line)
    assert last["event"] == "turn_result"
    assert json.loads(last["data"])["status"] == "failed"


async def test_an_error_while_storing_a_turn_fails_the_run_and_releases_it(
    racing: Racing, database: YieldingDatabase
) -> None:
    async with racing() as client:
        workflow_id = await publish(client, BOOKING)
        run_id = (await turn(client, workflow_id))["run_id"]  # type: ignore[arg-type]
        database.fail_once("runs", "update_one", is_turn_commit, InvalidDocument("cannot encode"))
        answer = await turn(client, workflow_id, run_id, "Ann")  # type: ignore[arg-type]
        assert answer["status"] == "failed" and answer["turn"] == 2
        assert [e["type"] for e in answer["events"]] == ["run_failed"]
        assert answer["error"] == "The turn could not be completed because of an internal error."
        run = (await client.get(f"/v1/runs/{run_id}")).json()
        assert run["status"] == "failed" and run["variables"] == {}  # nothing half-stored
        events = await stored_events(client, run_id)
        assert events[-1]["type"] == "run_failed"
        refused = await turn(client, workflow_id, run_id, "Ann", expect=409)  # type: ignore[arg-type]
        assert refused["code"] == "run_terminal"


async def crash_recovery_by_read(
    client: httpx.AsyncClient, database: YieldingDatabase, clock: FakeClock, run_id: str
) -> None:
    """Past the lease, a read takes the turn over; its server dies again before committing."""
    clock.advance(31)
    database.hold("runs", "update_one", is_turn_commit)
    reading = asyncio.create_task(client.get(f"/v1/runs/{run_id}"))
    await wait_until(lambda: database.waiting == 1)
    reading.cancel()
    await asyncio.gather(reading, return_exceptions=True)
    database.release()


@pytest.mark.claiming
async def test_a_turn_that_keeps_killing_its_server_fails_the_run_after_two_recoveries(
    racing: Racing, database: YieldingDatabase, clock: FakeClock
) -> None:
    async with racing() as client:
        booking_id, run_id = await crashed_run(client, database)
        await crash_recovery_by_read(client, database, clock, run_id)  # executed again: 1
        await crash_recovery_by_read(client, database, clock, run_id)  # executed again: 2
        clock.advance(31)
        run = (await client.get(f"/v1/runs/{run_id}")).json()
        assert run["status"] == "failed" and run["turn"] == 2
        assert "interrupted 3 times" in run["error"]
        events = await stored_events(client, run_id)
        assert events[-1]["type"] == "run_failed" and events[-1]["turn"] == 2
        refused = await turn(client, booking_id, run_id, "Ann", expect=409)  # type: ignore[arg-type]
        assert refused["code"] == "run_terminal"


@pytest.mark.claiming
async def test_the_number_of_recoveries_is_configurable(
    settings: Settings, database: YieldingDatabase, clock: FakeClock
) -> None:
    patient = Settings(api_keys=settings.api_keys, max_turn_recoveries=0, run_cache_mb=0)
    async with serving(create_app(patient, database=database, clock=clock)) as client:  # type: ignore[arg-type]
        _, run_id = await crashed_run(client, database)
        clock.advance(31)
        run = (await client.get(f"/v1/runs/{run_id}")).json()
        assert run["status"] == "failed" and "interrupted 1 times" in run["error"]


async def test_a_streaming_client_that_leaves_at_once_does_not_block_the_run(
    settings: Settings, database: YieldingDatabase, clock: FakeClock
) -> None:
    """The client sends its turn and closes the connection before any byte comes back: the
    turn still runs and is stored once, and the run takes the next turn at once."""
    app = create_app(settings, database=database, clock=clock)  # type: ignore[arg-type]
    async with serving(app) as client:
        workflow_id = await publish(client, BOOKING)
        run_id = (await turn(client, workflow_id))["run_id"]  # type: ignore[arg-type]
        body = json.dumps({"run_id": run_id, "run_input": {"message": "Ann"}}).encode()
        await asgi_request_then_leave(app, f"/v1/workflows/{workflow_id}/execute", body)
        await app.state.runs.executor.drain()
        answer = await turn(client, workflow_id, run_id, "4")  # type: ignore[arg-type]
        assert answer["turn"] == 3 and answer["status"] == "paused"
        events = await stored_events(client, run_id)
        received = [e["data"]["message"] for e in events if e["type"] == "input_received"]
        assert received == ["Ann", "4"]


async def asgi_request_then_leave(app: Any, path: str, body: bytes) -> None:
    """A POST whose client disconnects right after sending, before reading anything."""
    messages = [
        {"type": "http.request", "body": body, "more_body": False},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # nothing more ever comes
        raise AssertionError

    async def send(_message: dict[str, Any]) -> None:
        return None  # nobody reads it: the client has gone

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"x-api-key", KEY_A.encode()),
            (b"accept", b"text/event-stream"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    await asyncio.wait_for(app(scope, receive, send), timeout=5)


BACKREFERENCE = flow(
    (
        "ask",
        {"type": "input", "save_as": "x", "next": "end", "validate": {"pattern": "^(a)\\1$"}},
    ),
    ("end", {"type": "end"}),
)


async def test_a_stored_version_that_no_longer_compiles_fails_cleanly(
    settings: Settings, database: YieldingDatabase, clock: FakeClock
) -> None:
    """A version stored under other rules (a pattern Python's re took, RE2 refuses): a new
    run is refused with the reason, a waiting run fails with it, and neither is stuck."""
    async with serving(create_app(settings, database=database, clock=clock)) as client:  # type: ignore[arg-type]
        workflow_id = await publish(client, BOOKING)
        run_id = (await turn(client, workflow_id))["run_id"]  # type: ignore[arg-type]
    await database["workflow_versions"].update_one(
        {"workflow_id": ObjectId(workflow_id)}, {"$set": {"definition": BACKREFERENCE}}
    )
    restarted_app = create_app(settings, database=database, clock=clock)  # type: ignore[arg-type]
    async with serving(restarted_app) as restarted:  # a new process: nothing cached
        refused = await turn(restarted, workflow_id, expect=422)  # type: ignore[arg-type]
        assert refused["code"] == "invalid_definition"
        assert [e["path"] for e in refused["errors"]] == ["nodes.ask.validate.pattern"]
        answer = await turn(restarted, workflow_id, run_id, "Ann")  # type: ignore[arg-type]
        assert answer["status"] == "failed" and answer["turn"] == 2
        assert "cannot run on this server" in answer["error"]
        run = (await restarted.get(f"/v1/runs/{run_id}")).json()
        assert run["status"] == "failed"


async def test_a_turn_whose_state_would_be_too_large_to_store_fails_naming_the_limit(
    settings: Settings, database: YieldingDatabase, clock: FakeClock
) -> None:
    small = Settings(api_keys=settings.api_keys, max_stored_bytes=100_000)
    definition = flow(
        ("ask", {"type": "input", "save_as": "x", "next": "grow"}),
        ("grow", {"type": "set", "values": {"big": "x * 20"}, "next": "ask"}),
    )
    async with serving(create_app(small, database=database, clock=clock)) as client:  # type: ignore[arg-type]
        workflow_id = await publish(client, definition)
        run_id = (await turn(client, workflow_id))["run_id"]  # type: ignore[arg-type]
        kept = await turn(client, workflow_id, run_id, "y" * 1000)  # type: ignore[arg-type]
        assert kept["status"] == "waiting_for_user_input"
        answer = await turn(client, workflow_id, run_id, "z" * 10_000)  # type: ignore[arg-type]
        assert answer["status"] == "failed"
        assert "(limit max_stored_bytes)" in answer["error"]
        run = (await client.get(f"/v1/runs/{run_id}")).json()
        assert run["status"] == "failed" and len(run["variables"]["big"]) == 20_000
