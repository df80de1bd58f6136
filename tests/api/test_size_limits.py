"""The size of what a run stores: a turn that would store more than
``TANDEM_MAX_STORED_BYTES`` (its state, measured as BSON, and its latest events) ends the
run ``failed`` with a ``run_failed`` naming the limit, before anything is written; what
was stored before stays as it was, and the run goes on answering. Each test runs on the
embedded store and through PyMongo (the wire double, or the MongoDB of MONGODB_URI)."""

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import pytest
from bson import ObjectId

from app.config import ConfigError, Settings
from app.engine.llm import LlmClient
from app.server import create_app
from app.store.database import Database
from tests.api.helpers import serving, turn
from tests.api.llm_scripts import Scripted
from tests.support import FakeClock, flow

LIMIT = "(limit max_stored_bytes)"


@asynccontextmanager
async def tandem(
    settings: Settings,
    database: Database,
    clock: FakeClock,
    definition: dict[str, Any],
    *,
    llm: LlmClient | None = None,
    **changes: Any,
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A server with ``changes`` to its settings, and ``definition`` published."""
    app = create_app(
        msgspec.structs.replace(settings, **changes), database=database, clock=clock, llm=llm
    )
    async with serving(app) as http:
        response = await http.post("/v1/workflows", json={"name": "w", "definition": definition})
        assert response.status_code == 201, response.text
        yield http, response.json()["workflow_id"]


async def events_of(http: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    response = await http.get(f"/v1/runs/{run_id}/events")
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    return events


async def assert_failed_cleanly(
    http: httpx.AsyncClient, workflow_id: str, run_id: str, answer: dict[str, Any]
) -> dict[str, Any]:
    """The turn's answer says failed naming the limit, and the run answers every request."""
    assert answer["status"] == "failed" and answer["is_terminal"], answer
    assert LIMIT in answer["error"]
    last = answer["events"][-1]
    assert last["type"] == "run_failed" and LIMIT in last["data"]["error"]
    assert last["node_id"] == last["data"]["node_id"]
    run = (await http.get(f"/v1/runs/{run_id}")).json()
    assert run["status"] == "failed" and run["error"] == answer["error"]
    assert (await events_of(http, run_id))[-1] == last
    refused = await turn(http, workflow_id, run_id, "more", expect=409)
    assert refused["code"] == "run_terminal"
    listed = (await http.get("/v1/runs", params={"status": "failed"})).json()["items"]
    assert [item["run_id"] for item in listed] == [run_id]
    return run


GROWING = flow(
    ("ask", {"type": "input", "save_as": "x", "next": "grow"}),
    ("grow", {"type": "set", "values": {"big": "big ~ x"}, "next": "ask"}),
)


async def test_variables_growing_past_the_limit_fail_the_run_and_keep_its_state(
    settings: Settings, database_per_backend: Database, clock: FakeClock
) -> None:
    async with tandem(settings, database_per_backend, clock, GROWING, max_stored_bytes=200_000) as (
        http,
        workflow_id,
    ):
        run_id = (await turn(http, workflow_id, inputs={"big": ""}))["run_id"]
        kept = None
        for number in range(1, 20):
            answer = await turn(http, workflow_id, run_id, str(number % 10) * 10_000)
            if answer["status"] == "failed":
                break
            kept = answer
        assert kept is not None, "the very first turn failed"
        assert answer["turn"] == kept["turn"] + 1
        run = await assert_failed_cleanly(http, workflow_id, run_id, answer)
        assert "largest variable is 'big'" in answer["error"]
        # The run keeps the variables and history of its last stored turn.
        assert len(run["variables"]["big"]) == 10_000 * (kept["turn"] - 1)
        stored = await database_per_backend["runs"].find_one({"_id": ObjectId(run_id)})
        assert stored is not None and stored["state"]["variables"]["big"] == run["variables"]["big"]
        assert len(stored["state"]["history"]) == kept["turn"] - 1


ZEROS = flow(
    ("ask", {"type": "input", "save_as": "n", "next": "fill"}),
    (
        "fill",
        {"type": "set", "values": {"a": "[0] * (n | int)", "b": "[0] * (n | int)"}, "next": "ask"},
    ),
)


async def test_the_state_is_measured_as_mongodb_stores_it(
    settings: Settings, database_per_backend: Database, clock: FakeClock
) -> None:
    """20,000 zeros are 40 KB of JSON but 210 KB of BSON (each item is a key and a
    value): measured as JSON, they would pass a 150 KB limit."""
    async with tandem(settings, database_per_backend, clock, ZEROS, max_stored_bytes=150_000) as (
        http,
        workflow_id,
    ):
        run_id = (await turn(http, workflow_id))["run_id"]
        fits = await turn(http, workflow_id, run_id, "4000")
        assert fits["status"] == "waiting_for_user_input"
        answer = await turn(http, workflow_id, run_id, "10000")
        run = await assert_failed_cleanly(http, workflow_id, run_id, answer)
        assert len(run["variables"]["a"]) == len(run["variables"]["b"]) == 4_000


CHATTY = flow(
    ("start", {"type": "set", "values": {"n": "0"}, "next": "say"}),
    ("say", {"type": "message", "text": "{{ 'x' * 20000 }}", "next": "count"}),
    ("count", {"type": "set", "values": {"n": "n + 1"}, "next": "again"}),
    (
        "again",
        {"type": "switch", "cases": [{"when": "n < 10", "next": "say"}], "default": "ask"},
    ),
    ("ask", {"type": "input", "save_as": "x", "next": "start"}),
)


async def test_a_turn_whose_events_pass_the_limit_fails_naming_it(
    settings: Settings, database_per_backend: Database, clock: FakeClock
) -> None:
    async with tandem(settings, database_per_backend, clock, CHATTY, max_stored_bytes=100_000) as (
        http,
        workflow_id,
    ):
        answer = await turn(http, workflow_id)
        run_id = answer["run_id"]
        await assert_failed_cleanly(http, workflow_id, run_id, answer)
        assert answer["turn"] == 1 and [e["type"] for e in answer["events"]] == ["run_failed"]
        assert answer["events"][0]["node_id"] == "ask"  # where the turn ended


SLOW = flow(
    ("ask", {"type": "input", "save_as": "x", "next": "say"}),
    ("say", {"type": "message", "text": "{{ 'y' * 30000 }}", "next": "think"}),
    ("think", {"type": "llm", "prompt": "hi", "save_as": "reply", "next": "grow"}),
    ("grow", {"type": "set", "values": {"big": "'z' * 200000"}, "next": "ask"}),
)


async def test_events_a_turn_stored_on_its_way_stay_when_it_fails_the_limit(
    settings: Settings, database_per_backend: Database, clock: FakeClock
) -> None:
    """A turn longer than the poll interval stores its events as it goes (and streams show
    them): when its end is too large to store, run_failed follows them, under the next
    seq, and none of them is replaced or lost."""
    llm = Scripted()
    async with tandem(
        settings,
        database_per_backend,
        clock,
        SLOW,
        llm=llm,
        max_stored_bytes=100_000,
        poll_ms=10,
    ) as (http, workflow_id):
        run_id = (await turn(http, workflow_id))["run_id"]
        executing = asyncio.create_task(turn(http, workflow_id, run_id, "go"))
        await asyncio.wait_for(llm.started.wait(), 10)
        runs = database_per_backend["runs"]
        stored: list[dict[str, Any]] = []
        for _ in range(1_000):  # until a progress record holds the turn's llm_started
            raw = await runs.find_one({"_id": ObjectId(run_id)})
            assert raw is not None
            stored = [event for event in json.loads(raw["log_json"]) if event["turn"] == 2]
            if stored and stored[-1]["type"] == "llm_started":
                break
            await asyncio.sleep(0.01)
        assert [event["type"] for event in stored][-4:] == [
            "message",
            "node_completed",
            "node_started",
            "llm_started",
        ]
        llm.say("hello", None)
        answer = await asyncio.wait_for(executing, 10)
        await assert_failed_cleanly(http, workflow_id, run_id, answer)
        assert answer["events"][:-1] == stored
        assert answer["events"][-1]["seq"] == stored[-1]["seq"] + 1
        assert [e for e in await events_of(http, run_id) if e["turn"] == 2] == answer["events"]


def test_the_limit_leaves_room_for_a_turn_s_input_within_16_mib() -> None:
    assert Settings.from_env({}).max_stored_bytes == 8 * 1024 * 1024
    for env in (
        {"TANDEM_MAX_STORED_BYTES": str(10 * 1024 * 1024)},
        {"TANDEM_MAX_BODY_BYTES": str(2 * 1024 * 1024)},
    ):
        with pytest.raises(ConfigError, match="16 MiB"):
            Settings.from_env(env)
    small_body = {"TANDEM_MAX_STORED_BYTES": "12000000", "TANDEM_MAX_BODY_BYTES": "500000"}
    assert Settings.from_env(small_body).max_stored_bytes == 12_000_000
