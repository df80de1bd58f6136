"""A blocking first turn stores its run once, when it ends: nobody knows the run's id
before its answer. One that runs past the poll interval is stored at its first progress
record instead, and is listed as running from then on. A first turn pins the latest
version, which each process keeps for a moment rather than reading it every time."""

import asyncio
import time
from typing import Any

import msgspec

from app.config import Settings
from app.server import create_app
from tests.api.helpers import serving
from tests.api.llm_scripts import Scripted
from tests.conftest import KEY_B
from tests.support import BOOKING, YieldingDatabase, flow

GREETER = flow(
    ("think", {"type": "llm", "prompt": "Say hello", "save_as": "hello", "next": "done"}),
    ("done", {"type": "end", "output": {"hello": "hello"}}),
)


def writes_to_runs(database: YieldingDatabase) -> list[str]:
    """The names of the write calls made to ``runs`` from now on (until ``release``)."""
    return database.record("runs", "insert_one", "update_one", "find_one_and_update", "replace_one")


async def create(http: Any, definition: dict[str, Any]) -> str:
    answer = await http.post("/v1/workflows", json={"name": "w", "definition": definition})
    workflow_id: str = answer.json()["workflow_id"]
    return workflow_id


async def test_a_blocking_first_turn_is_one_insert_of_the_committed_run(
    settings: Settings, database: YieldingDatabase
) -> None:
    async with serving(create_app(settings, database=database)) as http:  # type: ignore[arg-type]
        workflow_id = await create(http, BOOKING)
        writes = writes_to_runs(database)
        first = await http.post(f"/v1/workflows/{workflow_id}/execute", json={})
        database.release()
        assert first.status_code == 200, first.text
        assert writes == ["insert_one"]
        run = (await http.get(f"/v1/runs/{first.json()['run_id']}")).json()
        assert run["status"] == "waiting_for_user_input" and run["turn"] == 1
        events = (await http.get(f"/v1/runs/{first.json()['run_id']}/events")).json()["events"]
        assert events == first.json()["events"]

        # The next turn, here, resumes the run as this process stored it: one conditional
        # write (tests/api/test_cached_turn.py).
        writes = writes_to_runs(database)
        body = {"run_id": first.json()["run_id"], "run_input": {"message": "Ann"}}
        second = await http.post(f"/v1/workflows/{workflow_id}/execute", json=body)
        database.release()
        assert second.status_code == 200 and second.json()["status"] == "waiting_for_user_input"
        assert writes == ["update_one"]


async def test_a_long_blocking_first_turn_is_stored_and_listed_while_it_runs(
    settings: Settings, database: YieldingDatabase
) -> None:
    llm = Scripted()
    quick = Settings(api_keys=settings.api_keys, poll_ms=20)
    async with serving(create_app(quick, database=database, llm=llm)) as http:  # type: ignore[arg-type]
        workflow_id = await create(http, GREETER)
        writes = writes_to_runs(database)
        first = asyncio.create_task(http.post(f"/v1/workflows/{workflow_id}/execute", json={}))
        await asyncio.wait_for(llm.started.wait(), 5)
        llm.say("Hello ")
        for _ in range(500):  # the turn runs past the poll interval: its run is stored
            listed = (await http.get("/v1/runs", params={"status": "running"})).json()["items"]
            if listed:
                break
            await asyncio.sleep(0.01)
        assert [item["workflow_id"] for item in listed] == [workflow_id]
        run_id = listed[0]["run_id"]
        running = (await http.get(f"/v1/runs/{run_id}")).json()
        assert running["status"] == "running" and running["current_node"] == "think"

        llm.say("there", None)
        answer = await asyncio.wait_for(first, 5)
        database.release()
        assert answer.status_code == 200, answer.text
        assert answer.json()["run_id"] == run_id and answer.json()["status"] == "completed"
        assert answer.json()["output"] == {"hello": "Hello there"}
        # Stored once, then recorded and committed as any turn in flight.
        assert writes[0] == "insert_one" and writes.count("insert_one") == 1
        assert writes[-1] == "update_one"
        events = (await http.get(f"/v1/runs/{run_id}/events")).json()["events"]
        assert events == answer.json()["events"]
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


CHANGED = flow(("bye", {"type": "end", "output": {"v": "1"}}))


async def test_first_turns_read_the_latest_version_once_in_a_while(
    settings: Settings, database: YieldingDatabase
) -> None:
    keeping = msgspec.structs.replace(settings, latest_version_ms=1000)
    async with serving(create_app(keeping, database=database)) as http:  # type: ignore[arg-type]
        workflow_id = await create(http, BOOKING)
        reads = database.record("workflows", "find_one")
        for _ in range(5):
            answer = await http.post(f"/v1/workflows/{workflow_id}/execute", json={})
            assert answer.status_code == 200 and answer.json()["version"] == 0
        database.release()
        assert reads == ["find_one"]
        await asyncio.sleep(1.0)
        reads = database.record("workflows", "find_one")
        await http.post(f"/v1/workflows/{workflow_id}/execute", json={})
        database.release()
        assert reads == ["find_one"]  # read again once the interval has passed

        # Another tenant's first turn is refused as ever, however recently it was read.
        other = await http.post(
            f"/v1/workflows/{workflow_id}/execute", json={}, headers={"X-API-Key": KEY_B}
        )
        assert other.status_code == 404 and other.json()["code"] == "not_found"


async def test_a_first_turn_after_a_publish_pins_it_in_every_process(
    settings: Settings, database: YieldingDatabase
) -> None:
    # Two servers on one database; each keeps the latest version for two seconds, far
    # longer than the publish below takes, so only the publish's wait lets the second
    # server's next first turn see the new version.
    keeping = msgspec.structs.replace(settings, latest_version_ms=2000)
    one = serving(create_app(keeping, database=database))  # type: ignore[arg-type]
    two = serving(create_app(keeping, database=database))  # type: ignore[arg-type]
    async with one as publisher, two as runner:
        workflow_id = await create(publisher, BOOKING)
        before = await runner.post(f"/v1/workflows/{workflow_id}/execute", json={})
        assert before.json()["version"] == 0  # the second server now keeps version 0

        started = time.monotonic()
        published = await publisher.post(
            f"/v1/workflows/{workflow_id}/versions", json={"definition": CHANGED}
        )
        assert published.status_code == 201 and published.json()["version"] == 1
        assert time.monotonic() - started >= 2.0  # it answered once no process kept 0

        for http in (runner, publisher):
            after = await http.post(f"/v1/workflows/{workflow_id}/execute", json={})
            assert after.json()["version"] == 1 and after.json()["output"] == {"v": 1}
            pinned = await http.post(f"/v1/workflows/{workflow_id}/execute?version=0", json={})
            assert pinned.json()["version"] == 0
