"""A blocking first turn stores its run once, when it ends: nobody knows the run's id
before its answer. One that runs past the poll interval is stored at its first progress
record instead, and is listed as running from then on."""

import asyncio
from typing import Any

from app.config import Settings
from app.server import create_app
from tests.api.helpers import serving
from tests.api.llm_scripts import Scripted
from tests.support import BOOKING, YieldingDatabase, flow

GREETER = flow(
    ("think", {"type": "llm", "prompt": "Say hello", "save_as": "hello", "next": "done"}),
    ("done", {"type": "end", "output": {"hello": "hello"}}),
)


def writes_to_runs(database: YieldingDatabase) -> list[str]:
    """The names of the write calls made to ``runs`` from now on (until ``release``)."""
    calls: list[str] = []
    for method in ("insert_one", "update_one", "find_one_and_update", "replace_one"):
        database.hold("runs", method, lambda _, method=method: calls.append(method) is not None)
    return calls


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
