"""Listing runs: ``GET /v1/runs`` and ``GET /v1/workflows/{workflow_id}/runs``, their
filters, keyset pages and refusals."""

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from app.clock import Clock, utc_now
from app.config import Settings
from app.server import create_app
from tests.api.helpers import Client, serving, turn
from tests.conftest import KEY_B
from tests.support import BOOKING, YieldingDatabase, is_turn_commit, wait_until

Http = Client | httpx.AsyncClient
SUMMARY_FIELDS = {
    "run_id",
    "workflow_id",
    "version",
    "status",
    "turn",
    "progress",
    "current_node",
    "execution_source",
    "created_at",
    "updated_at",
    "completed_at",
    "cleanup_after",
}


@pytest.fixture
def clock() -> Clock:
    """Real time: a run's id holds the second it was made, and the time filters use it."""
    return utc_now


async def new_workflow(http: Http, name: str = "Booking") -> str:
    response = await http.post("/v1/workflows", json={"name": name, "definition": BOOKING})
    assert response.status_code == 201, response.text
    workflow_id: str = response.json()["workflow_id"]
    return workflow_id


async def new_run(http: Http, workflow_id: str, *messages: str | None) -> str:
    """A run of the booking workflow after its first turn and one turn per message (None:
    a turn without a message, which answers the pause)."""
    run_id: str = (await turn(http, workflow_id))["run_id"]  # type: ignore[arg-type]
    for message in messages:
        await turn(http, workflow_id, run_id, message)  # type: ignore[arg-type]
    return run_id


async def stop(http: Http, run_id: str) -> None:
    response = await http.post(f"/v1/runs/{run_id}/cancel")
    assert response.status_code == 200, response.text


async def listing(http: Http, path: str = "/v1/runs", **params: Any) -> dict[str, Any]:
    response = await http.get(path, params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def ids(http: Http, path: str = "/v1/runs", **params: Any) -> list[str]:
    """Every run the listing shows, following its pages."""
    seen: list[str] = []
    cursor = None
    while True:
        page = await listing(http, path, **params, **({"cursor": cursor} if cursor else {}))
        seen += [item["run_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def test_runs_are_listed_newest_first_as_summaries(client: Client) -> None:
    workflow_id = await new_workflow(client)
    waiting = await new_run(client, workflow_id)
    paused = await new_run(client, workflow_id, "Ann", "4")
    completed = await new_run(client, workflow_id, "Bob", "2", None)
    page = await listing(client)
    assert [item["run_id"] for item in page["items"]] == [completed, paused, waiting]
    assert page["next_cursor"] is None
    newest = page["items"][0]
    assert set(newest) == SUMMARY_FIELDS  # no variables, output or events
    detail = (await client.get(f"/v1/runs/{completed}")).json()
    assert {name: detail[name] for name in SUMMARY_FIELDS} == newest
    assert newest["status"] == "completed" and newest["progress"] == 100
    assert newest["completed_at"] is not None and newest["workflow_id"] == workflow_id
    assert [item["status"] for item in page["items"][1:]] == ["paused", "waiting_for_user_input"]
    assert page["items"][2]["current_node"] == "ask_name" and page["items"][2]["turn"] == 1


async def test_each_status_lists_its_runs_and_running_means_a_turn_executing(
    settings: Settings, database: YieldingDatabase
) -> None:
    app = create_app(settings, database=database, clock=utc_now)  # type: ignore[arg-type]
    async with serving(app) as http:
        workflow_id = await new_workflow(http)
        waiting = await new_run(http, workflow_id)
        paused = await new_run(http, workflow_id, "Ann", "4")
        completed = await new_run(http, workflow_id, "Bob", "2", None)
        cancelled = await new_run(http, workflow_id)
        await stop(http, cancelled)
        executing = await new_run(http, workflow_id)
        database.hold("runs", "update_one", is_turn_commit)
        accepted = await http.post(
            f"/v1/workflows/{workflow_id}/execute",
            json={"run_id": executing, "run_input": {"message": "Cy"}},
            headers={"Prefer": "respond-async"},
        )
        assert accepted.status_code == 202, accepted.text
        await wait_until(lambda: database.waiting > 0)  # the turn waits at its commit

        expected = {
            "waiting_for_user_input": [waiting],  # not the one whose turn is executing
            "paused": [paused],
            "completed": [completed],
            "cancelled": [cancelled],
            "running": [executing],
            "failed": [],
            "aborted_looping_risk": [],
            "not_started": [],
            "started": [],
        }
        for status, runs in expected.items():
            page = await listing(http, status=status)
            assert [item["run_id"] for item in page["items"]] == runs, status
            assert all(item["status"] == status for item in page["items"])
        running = (await listing(http, status="running"))["items"][0]
        assert running["turn"] == 1 and running["progress"] < 100

        database.release()
        for _ in range(500):  # at most 5 s
            if not (await listing(http, status="running"))["items"]:
                break
            await asyncio.sleep(0.01)
        assert await ids(http, status="waiting_for_user_input") == [executing, waiting]


async def test_the_workflow_filter_and_route_list_one_workflows_runs(client: Client) -> None:
    booking = await new_workflow(client)
    other = await new_workflow(client, "Other")
    mine = [await new_run(client, booking), await new_run(client, booking, "Ann", "4")]
    theirs = await new_run(client, other)
    assert await ids(client, workflow_id=booking) == mine[::-1]
    assert await ids(client, f"/v1/workflows/{booking}/runs") == mine[::-1]
    assert await ids(client, f"/v1/workflows/{other}/runs") == [theirs]
    # Combined with a status, and the id in capitals as ids may be written.
    assert await ids(client, workflow_id=booking.upper(), status="paused") == [mine[1]]
    assert await ids(client, f"/v1/workflows/{booking.upper()}/runs", status="paused") == [mine[1]]
    assert await ids(client, workflow_id=other, status="paused") == []
    # A well-formed id of no workflow filters everything out; its own route says 404.
    nothing = "65f0c0ffee0000000000abcd"
    assert await ids(client, workflow_id=nothing) == []
    missing = await client.get(f"/v1/workflows/{nothing}/runs")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


async def test_created_after_and_before_compare_to_the_millisecond(client: Client) -> None:
    booking = await new_workflow(client)
    other = await new_workflow(client, "Other")
    made = [await new_run(client, booking if i % 2 else other) for i in range(6)]
    runs = (await listing(client))["items"]
    assert [run["run_id"] for run in runs] == made[::-1]
    created = {run["run_id"]: at(run["created_at"]) for run in runs}
    half_ms = timedelta(microseconds=500)
    for run_id, moment in created.items():
        at_or_after = [r for r in made[::-1] if created[r] >= moment]
        before = [r for r in made[::-1] if created[r] < moment]
        assert await ids(client, created_after=iso(moment)) == at_or_after
        assert await ids(client, created_before=iso(moment)) == before
        # Half a millisecond later: this run was created before that, not after.
        assert run_id not in await ids(client, created_after=iso(moment + half_ms))
        assert run_id in await ids(client, created_before=iso(moment + half_ms))
        # The same time written with another offset.
        in_paris = moment.astimezone(timezone(timedelta(hours=1))).isoformat()
        assert await ids(client, created_after=in_paris) == at_or_after
    # Combined with each other, a workflow and a status, and on the workflow's route.
    first, last = created[made[1]], created[made[4]]
    window = [r for r in made[::-1] if first <= created[r] < last]
    assert await ids(client, created_after=iso(first), created_before=iso(last)) == window
    bookings = [r for r in window if r in made[1::2]]
    assert bookings and bookings != window
    params = {"created_after": iso(first), "created_before": iso(last)}
    assert await ids(client, workflow_id=booking, **params) == bookings
    assert await ids(client, f"/v1/workflows/{booking}/runs", **params) == bookings
    assert await ids(client, workflow_id=booking, status="waiting_for_user_input", **params) == (
        bookings
    )
    assert await ids(client, status="completed", **params) == []
    # An empty or inverted window lists nothing; far-off times list everything or nothing.
    assert await ids(client, created_after=iso(last), created_before=iso(first)) == []
    assert await ids(client, created_after="0001-01-01T00:00:00+23:59") == made[::-1]
    assert await ids(client, created_before="9999-12-31T23:59:59-23:59") == made[::-1]
    assert await ids(client, created_after="9999-12-31T23:59:59-23:59") == []
    assert await ids(client, created_before="0001-01-01T00:00:00+23:59") == []


async def test_pages_follow_one_another_without_an_empty_last_page(client: Client) -> None:
    workflow_id = await new_workflow(client)
    made = [await new_run(client, workflow_id) for _ in range(6)]
    first = await listing(client, limit=2)
    second = await listing(client, limit=2, cursor=first["next_cursor"])
    third = await listing(client, limit=2, cursor=second["next_cursor"])
    assert [len(page["items"]) for page in (first, second, third)] == [2, 2, 2]
    assert third["next_cursor"] is None  # six runs: three full pages, and no fourth
    seen = [item["run_id"] for page in (first, second, third) for item in page["items"]]
    assert seen == made[::-1]
    assert first["next_cursor"] == first["items"][-1]["run_id"]
    # A page of the same size as what is left is the last; a cursor in capitals works.
    rest = await listing(client, limit=4, cursor=first["next_cursor"].upper())
    assert [item["run_id"] for item in rest["items"]] == made[::-1][2:]
    assert rest["next_cursor"] is None
    assert (await listing(client, limit=7))["next_cursor"] is None
    # On the workflow's route too, and with a filter.
    path = f"/v1/workflows/{workflow_id}/runs"
    page = await listing(client, path, limit=5, status="waiting_for_user_input")
    assert len(page["items"]) == 5 and page["next_cursor"] == made[1]
    assert await ids(client, path, limit=1) == made[::-1]


async def test_runs_created_while_paging_neither_repeat_nor_hide_others(client: Client) -> None:
    workflow_id = await new_workflow(client)
    made = [await new_run(client, workflow_id) for _ in range(5)]
    seen: list[str] = []
    changing = iter(made)
    cursor = None
    while True:
        page = await listing(client, limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [item["run_id"] for item in page["items"]]
        await new_run(client, workflow_id)  # a newer run after every page
        await stop(client, next(changing))  # and a run that changes: its status, not its place
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made[::-1]
    assert len(await ids(client)) == 8


async def test_the_limit_is_20_by_default_and_1_to_100(client: Client) -> None:
    workflow_id = await new_workflow(client)
    for _ in range(21):
        await new_run(client, workflow_id)
    page = await listing(client)
    assert len(page["items"]) == 20 and page["next_cursor"] is not None
    assert len((await listing(client, limit=100))["items"]) == 21
    assert len((await listing(client, limit=1))["items"]) == 1
    for limit in (0, 101, -1, "many", ""):
        for path in ("/v1/runs", f"/v1/workflows/{workflow_id}/runs"):
            response = await client.get(path, params={"limit": limit})
            assert response.status_code == 400, (path, limit)
            body = response.json()
            assert body["code"] == "validation_error"
            assert [error["path"] for error in body["errors"]] == ["limit"]


@pytest.mark.parametrize(
    ("name", "value", "code"),
    [
        ("workflow_id", "65f0c0ffee", "invalid_id"),
        ("workflow_id", "zzzzzzzzzzzzzzzzzzzzzzzz", "invalid_id"),
        ("cursor", "65f0c0ffee0000000000abcd!", "invalid_id"),
        ("cursor", "", "invalid_id"),
        ("status", "asleep", "validation_error"),
        ("status", "RUNNING", "validation_error"),
        ("created_after", "yesterday", "validation_error"),
        ("created_after", "2026-11-23T12:00:00", "validation_error"),  # no offset
        ("created_after", "2026-11-23", "validation_error"),
        ("created_after", "1795000000", "validation_error"),
        ("created_before", "2024-01-01T12:99:00Z", "validation_error"),
        ("created_before", "", "validation_error"),
    ],
)
async def test_a_bad_parameter_answers_400_naming_it(
    client: Client, name: str, value: str, code: str
) -> None:
    workflow_id = await new_workflow(client)
    paths = (
        ["/v1/runs"] if name == "workflow_id" else ["/v1/runs", f"/v1/workflows/{workflow_id}/runs"]
    )
    for path in paths:
        response = await client.get(path, params={name: value})
        assert response.status_code == 400, (path, response.text)
        body = response.json()
        assert body["code"] == code
        assert body["errors"][0]["path"] == name


async def test_a_plus_left_unencoded_in_a_url_is_explained(client: Client) -> None:
    response = await client.get("/v1/runs?created_after=2026-11-23T12:00:00+01:00")
    assert response.status_code == 400
    assert "%2B" in response.json()["detail"]
    encoded = await client.get("/v1/runs?created_after=2026-11-23T12:00:00%2B01:00")
    assert encoded.status_code == 200


async def test_the_workflow_route_checks_its_id(client: Client) -> None:
    response = await client.get("/v1/workflows/65f0c0ffee/runs")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_id" and body["errors"][0]["path"] == "workflow_id"


async def test_a_tenant_lists_only_its_own_runs(client: Client) -> None:
    workflow_id = await new_workflow(client)
    mine = await new_run(client, workflow_id)
    other = {"X-API-Key": KEY_B}
    theirs_workflow = (
        await client.post("/v1/workflows", json={"name": "B", "definition": BOOKING}, headers=other)
    ).json()["workflow_id"]
    theirs = (
        await client.post(f"/v1/workflows/{theirs_workflow}/execute", json={}, headers=other)
    ).json()["run_id"]
    assert await ids(client) == [mine]
    as_b = (await client.get("/v1/runs", headers=other)).json()
    assert [item["run_id"] for item in as_b["items"]] == [theirs]
    filtered = await client.get("/v1/runs", params={"workflow_id": workflow_id}, headers=other)
    assert filtered.json()["items"] == []
    # Another tenant's workflow is not found, as if it did not exist.
    response = await client.get(f"/v1/workflows/{workflow_id}/runs", headers=other)
    assert response.status_code == 404
    # A cursor from another tenant's listing only says where to start.
    assert await ids(client, cursor=theirs) == [mine]  # theirs is the newer
    unauthorized = await client.get("/v1/runs", headers={"X-API-Key": "nobody"})
    assert unauthorized.status_code == 401


async def test_the_listing_paths_answer_options_with_get(client: Client) -> None:
    workflow_id = await new_workflow(client)
    for path in ("/v1/runs", f"/v1/workflows/{workflow_id}/runs"):
        response = await client.options(path)
        assert response.status_code == 204, path
        assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "OPTIONS"}
