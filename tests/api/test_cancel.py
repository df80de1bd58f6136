"""DELETE /v1/runs/{run_id} and POST /v1/runs/{run_id}/cancel: a stop by another name."""

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import httpx
import pytest

from tests.api.helpers import Client, turn
from tests.api.test_concurrency import stored_events, turn_held_at_its_commit
from tests.conftest import KEY_B
from tests.support import YieldingDatabase

Racing = Callable[[], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.mark.parametrize("method", ["DELETE", "POST /cancel"])
async def test_cancel_a_waiting_run(client: Client, booking_id: str, method: str) -> None:
    run_id = (await turn(client, booking_id))["run_id"]
    verb, _, suffix = method.partition(" ")
    response = await client.request(verb, f"/v1/runs/{run_id}{suffix}")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "run_id": run_id,
        "cancelled": True,
        "previous_status": "waiting_for_user_input",
        "message": f"Run {run_id} is cancelled; it was waiting_for_user_input.",
    }
    run = (await client.get(f"/v1/runs/{run_id}")).json()
    assert run["status"] == "cancelled" and run["turn"] == 2
    events = (await client.get(f"/v1/runs/{run_id}/events?turn=2")).json()["events"]
    assert [e["type"] for e in events] == ["run_cancelled"]
    again = await client.request(verb, f"/v1/runs/{run_id}{suffix}")
    assert again.status_code == 409 and again.json()["code"] == "run_terminal"
    refused = await turn(client, booking_id, run_id, "Ann", expect=409)
    assert refused["code"] == "run_terminal"


async def test_cancel_answers_404_for_another_tenant_and_400_for_a_bad_id(
    client: Client, booking_id: str
) -> None:
    run_id = (await turn(client, booking_id))["run_id"]
    other = await client.post(f"/v1/runs/{run_id}/cancel", headers={"X-API-Key": KEY_B})
    assert other.status_code == 404 and other.json()["code"] == "not_found"
    bad = await client.delete("/v1/runs/not-an-id")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_id"
    still = (await client.get(f"/v1/runs/{run_id}")).json()
    assert still["status"] == "waiting_for_user_input"


@pytest.mark.claiming
async def test_a_cancel_wins_over_a_turn_in_flight(
    racing: Racing, database: YieldingDatabase
) -> None:
    async with racing() as client:
        _, run_id, in_flight = await turn_held_at_its_commit(client, database)
        cancel = await client.delete(f"/v1/runs/{run_id}")
        assert cancel.status_code == 200
        assert cancel.json()["previous_status"] == "running"
        database.release()
        interrupted = (await in_flight).json()
        assert interrupted["status"] == "cancelled"
        assert [e["type"] for e in interrupted["events"]] == ["run_cancelled"]
        events = await stored_events(client, run_id)
        assert "input_received" not in [e["type"] for e in events]
        run = (await client.get(f"/v1/runs/{run_id}")).json()
        assert run["status"] == "cancelled" and run["variables"] == {}
