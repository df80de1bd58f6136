from tests.api.helpers import Client, turn
from tests.support import flow


async def test_the_booking_conversation_turn_by_turn(client: Client, booking_id: str) -> None:
    first = await turn(client, booking_id)
    assert first["turn"] == 1 and first["version"] == 0 and first["workflow_id"] == booking_id
    assert first["status"] == "waiting_for_user_input"
    assert first["is_waiting_for_input"] and not first["is_terminal"]
    assert first["waiting_for"] == {
        "node_id": "ask_name",
        "kind": "message",
        "prompt": "What is your name?",
        "choices": None,
    }
    assert first["events"][0]["type"] == "run_started"
    assert first["events"][-1]["type"] == "waiting_for_input"
    run_id = first["run_id"]

    second = await turn(client, booking_id, run_id, "Ann")
    assert second["turn"] == 2 and second["waiting_for"]["node_id"] == "ask_size"
    rejected = await turn(client, booking_id, run_id, "lots")
    assert [e["type"] for e in rejected["events"]][-3:] == [
        "input_rejected",
        "message",
        "waiting_for_input",
    ]
    paused = await turn(client, booking_id, run_id, "4")
    assert paused["status"] == "paused" and paused["is_waiting_for_input"]
    assert paused["waiting_for"]["prompt"] == "Book for Ann, 4 people?"
    done = await turn(client, booking_id, run_id)
    assert (
        done["status"] == "completed" and done["is_terminal"] and not done["is_waiting_for_input"]
    )
    assert done["output"] == {"name": "Ann", "size": 4}
    assert done["turn"] == 5 and done["waiting_for"] is None
    assert done["events"][-1]["type"] == "run_completed"


async def test_events_are_stored_in_order_without_gaps(client: Client, booking_id: str) -> None:
    answers = [await turn(client, booking_id)]
    run_id = answers[0]["run_id"]
    for message in ["Ann", "x", "3", None]:
        answers.append(await turn(client, booking_id, run_id, message))
    answered = [event for answer in answers for event in answer["events"]]
    stored = (await client.get(f"/v1/runs/{run_id}/events")).json()
    assert stored["run_id"] == run_id
    assert stored["events"] == answered
    assert [e["seq"] for e in stored["events"]] == list(range(1, len(answered) + 1))
    third = (await client.get(f"/v1/runs/{run_id}/events", params={"turn": 3})).json()["events"]
    assert third == answers[2]["events"] and {e["turn"] for e in third} == {3}


async def test_read_a_run(client: Client, booking_id: str) -> None:
    run_id = (await turn(client, booking_id, inputs={"customer": "ACME"}))["run_id"]
    await turn(client, booking_id, run_id, "Ann")
    run = (await client.get(f"/v1/runs/{run_id}")).json()
    assert set(run) == {
        "run_id",
        "workflow_id",
        "version",
        "status",
        "turn",
        "created_at",
        "updated_at",
        "waiting_for",
        "output",
        "error",
        "variables",
        "progress",
        "current_node",
        "completed_nodes",
        "total_nodes",
        "started_at",
        "completed_at",
        "cleanup_after",
        "execution_source",
        "retry_count",
    }
    assert run["variables"] == {"customer": "ACME", "name": "Ann"}
    assert run["status"] == "waiting_for_user_input" and run["turn"] == 2
    assert run["waiting_for"]["node_id"] == "ask_size"


async def test_a_run_keeps_the_version_of_its_first_turn(client: Client, booking_id: str) -> None:
    run_id = (await turn(client, booking_id))["run_id"]
    changed = flow(
        ("ask_name", {"type": "input", "save_as": "name", "next": "bye"}),
        ("bye", {"type": "end", "output": {"v": "1"}}),
    )
    await client.post(f"/v1/workflows/{booking_id}/versions", json={"definition": changed})
    answer = await turn(client, booking_id, run_id, "Ann", inputs={"ignored": True})
    assert answer["version"] == 0 and answer["waiting_for"]["node_id"] == "ask_size"
    fresh = await turn(client, booking_id, message="Bo")
    assert fresh["version"] == 1 and fresh["output"] == {"v": 1}
    pinned = await turn(client, booking_id, version=0)
    assert pinned["version"] == 0
    assert (await turn(client, booking_id, version=9, expect=404))["code"] == "not_found"


async def test_stop_cancels_and_counts_as_a_turn(client: Client, booking_id: str) -> None:
    run_id = (await turn(client, booking_id))["run_id"]
    stopped = await turn(client, booking_id, run_id, run_input={"command": "stop"})
    assert stopped["status"] == "cancelled" and stopped["is_terminal"]
    assert stopped["turn"] == 2
    assert [e["type"] for e in stopped["events"]] == ["run_cancelled"]
    assert stopped["events"][0]["seq"] == 7
    for body in ({"run_input": {"command": "stop"}}, {"run_input": {"message": "Ann"}}, {}):
        refused = await client.post(
            f"/v1/workflows/{booking_id}/execute", json={"run_id": run_id, **body}
        )
        assert refused.status_code == 409
        assert refused.json()["code"] == "run_terminal"
    events = (await client.get(f"/v1/runs/{run_id}/events")).json()["events"]
    assert [e["seq"] for e in events] == list(range(1, 8))


async def test_completed_runs_take_no_more_turns(client: Client) -> None:
    created = await client.post(
        "/v1/workflows", json={"name": "one", "definition": flow(("end", {"type": "end"}))}
    )
    workflow_id = created.json()["workflow_id"]
    done = await turn(client, workflow_id)
    assert done["status"] == "completed" and done["output"] == {}
    refused = await turn(client, workflow_id, done["run_id"], "more", expect=409)
    assert refused["code"] == "run_terminal"


async def test_a_failing_template_fails_the_run_not_the_request(client: Client) -> None:
    definition = flow(
        ("greet", {"type": "message", "text": "Hi {{ nobody }}", "next": "end"}),
        ("end", {"type": "end"}),
    )
    created = await client.post("/v1/workflows", json={"name": "broken", "definition": definition})
    answer = await turn(client, created.json()["workflow_id"])
    assert answer["status"] == "failed" and answer["is_terminal"]
    assert "greet" in answer["error"] and "nobody" in answer["error"]
    assert answer["events"][-1]["type"] == "run_failed"
    assert answer["events"][-1]["data"]["node_id"] == "greet"


async def test_a_run_of_another_workflow_is_not_found(client: Client, booking_id: str) -> None:
    run_id = (await turn(client, booking_id))["run_id"]
    created = await client.post(
        "/v1/workflows", json={"name": "other", "definition": flow(("end", {"type": "end"}))}
    )
    other = created.json()["workflow_id"]
    assert (await turn(client, other, run_id, "Ann", expect=404))["code"] == "not_found"
    stop = await turn(client, other, run_id, run_input={"command": "stop"}, expect=404)
    assert stop["code"] == "not_found"
    assert (await client.get(f"/v1/runs/{run_id}")).json()["status"] == "waiting_for_user_input"


async def test_the_support_triage_example_routes_by_urgency(client: Client) -> None:
    import json
    from importlib import resources

    spec = json.loads(resources.files("app.examples").joinpath("support_triage.json").read_text())
    created = await client.post(
        "/v1/workflows", json={"name": spec["name"], "definition": spec["definition"]}
    )
    workflow_id = created.json()["workflow_id"]
    run_id = (await turn(client, workflow_id, inputs={"customer": "ACME"}))["run_id"]
    await turn(client, workflow_id, run_id, "billing")
    await turn(client, workflow_id, run_id, "2")
    answer = await turn(client, workflow_id, run_id, "Invoice is wrong")
    state = next(e for e in answer["events"] if e["type"] == "state")
    assert state["data"]["values"] == {
        "area": "billing",
        "urgency": "2",
        "priority": "normal",
        "queue": "billing-normal",
    }
    done = await turn(client, workflow_id, run_id)
    assert done["output"]["queue"] == "billing-normal" and done["output"]["note"] is None


async def test_a_run_id_carries_the_second_of_its_creation(client: Client, booking_id: str) -> None:
    """Listings filter by time through ``_id`` bounds: the id and ``created_at`` agree,
    also on the test's own clock."""
    from datetime import datetime

    from bson import ObjectId

    run_id = (await turn(client, booking_id))["run_id"]
    created = (await client.get(f"/v1/runs/{run_id}")).json()["created_at"]
    created_at = datetime.fromisoformat(created.replace("Z", "+00:00"))
    assert ObjectId(run_id).generation_time == created_at.replace(microsecond=0)


def test_the_execute_answer_has_no_after_request_hook_to_skip() -> None:
    """A blocking turn's answer is encoded by the handler and handed to Litestar as an
    ASGI response (app/api/runs.py): the layers' headers, cookies, background tasks and
    type encoders reach it, but an ``after_request`` hook, handed the Response itself,
    would fail on it. Adding one to a layer of the execute route must change that code."""
    from litestar import Litestar
    from litestar.routes import HTTPRoute

    from app.config import Settings
    from app.server import create_app

    app: Litestar = create_app(Settings(api_keys={"k": "t"}))
    execute = next(
        handler
        for route in app.routes
        if isinstance(route, HTTPRoute) and route.path.endswith("/execute")
        for handler in route.route_handlers
    )
    assert [layer for layer in execute.ownership_layers if layer.after_request] == []
