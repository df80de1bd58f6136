"""The event log as MongoDB holds it: each turn archived as a document users can query,
the run document keeping only the latest events, and runs found by a variable's value."""

import json

from app.config import Settings
from app.server import create_app
from tests.api.helpers import serving
from tests.support import YieldingDatabase

BOOKING = "000000000000000000000001"


async def test_turns_are_archived_and_queryable_with_plain_queries(
    settings: Settings, database: YieldingDatabase
) -> None:
    with_examples = Settings(api_keys=settings.api_keys, examples_tenant="acme")
    app = create_app(with_examples, database=database)  # type: ignore[arg-type]
    async with serving(app) as http:
        url = f"/v1/workflows/{BOOKING}/execute"
        first = await http.post(url, json={"inputs": {"customer": "ACME", "$odd.key": 1}})
        run_id = first.json()["run_id"]
        for message in ("Ann", "4", None):
            # Each turn's archive, in the background, is done before the next commit trims.
            await app.state.runs.executor.drain()
            body = {"run_id": run_id, "run_input": {"message": message} if message else {}}
            assert (await http.post(url, json=body)).status_code == 200
        await app.state.runs.executor.drain()
        events = (await http.get(f"/v1/runs/{run_id}/events")).json()["events"]

    runs, archive = database["runs"], database["run_events"]
    found = await runs.find({"state.variables.customer": "ACME"}, {"_id": 1}).to_list(None)
    assert [str(raw["_id"]) for raw in found] == [run_id]
    stored_run = await runs.find_one({"state.variables.customer": "ACME"})
    assert stored_run is not None and stored_run["state"]["status"] == "completed"
    assert stored_run["state"]["variables"]["%24odd%2Ekey"] == 1
    # Only the latest turn is still in the run document: the others were archived and trimmed.
    assert {e["turn"] for e in json.loads(stored_run["log_json"])} == {4}

    turns = await archive.find({"run_id": stored_run["_id"]}).sort("turn", 1).to_list(None)
    assert [t["turn"] for t in turns] == [1, 2, 3, 4]
    assert [e["seq"] for t in turns for e in t["events"]] == [e["seq"] for e in events]
    with_messages = await archive.find(
        {"run_id": stored_run["_id"], "events.type": "input_received"}
    ).to_list(None)
    assert [t["turn"] for t in with_messages] == [2, 3]
