"""``Idempotency-Key`` on ``POST .../execute``: a retried request gets the first answer
again and executes nothing, parallel duplicates execute once, and a retry after its server
died mid-turn gets the turn executed once, by its recovery.

Races and crashes are made certain as in test_concurrency.py: the database yields around
every call, and a chosen call is held (a crash: the request is cancelled while it waits).
"""

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.server import create_app
from tests.api.helpers import Client, serving, turn
from tests.api.test_concurrency import create_booking, stored_events
from tests.api.test_streaming_and_stop import create_chat, parse_sse
from tests.conftest import KEY_A, KEY_B
from tests.support import FakeClock, YieldingDatabase, is_turn_commit, wait_until

Racing = Callable[[], AbstractAsyncContextManager[httpx.AsyncClient]]
ASYNC = {"Prefer": "respond-async"}
STREAM = {"Accept": "text/event-stream"}
LEASE = 30


@pytest.fixture
def clock() -> FakeClock:
    # A record's expiry is compared by its TTL index with the database's own clock: it
    # must not be long past already.
    return FakeClock.from_real_time()


def post(
    client: httpx.AsyncClient | Client,
    workflow_id: str,
    key: str | None,
    headers: dict[str, str] | None = None,
    **body: Any,
) -> Any:
    """Post a turn with ``Idempotency-Key: key`` (a coroutine: await it, or make it a task)."""
    sent = dict(headers or {})
    if key is not None:
        sent["Idempotency-Key"] = key
    return client.post(f"/v1/workflows/{workflow_id}/execute", json=body, headers=sent)


def answer_to(run_id: str, message: str) -> dict[str, Any]:
    return {"run_id": run_id, "run_input": {"message": message}}


def is_link(args: tuple[Any, ...]) -> bool:
    """An idempotency_keys.update_one that links a record to its turn."""
    return len(args) > 1 and "turn" in args[1].get("$set", {}) and "answer" not in args[1]["$set"]


def is_run_claim(args: tuple[Any, ...]) -> bool:
    """A runs.find_one_and_update that claims a run for a turn."""
    return len(args) > 1 and "claim" in args[1].get("$set", {})


async def crash_while_held(
    database: YieldingDatabase, request: "asyncio.Task[httpx.Response]"
) -> None:
    """The request's server dies at the held call: the request goes no further."""
    await wait_until(lambda: database.waiting == 1)
    request.cancel()
    await asyncio.gather(request, return_exceptions=True)
    database.release()


async def keyed_turn_crashed_at(
    client: httpx.AsyncClient,
    database: YieldingDatabase,
    key: str,
    held: tuple[str, str, Callable[[tuple[Any, ...]], bool]],
) -> tuple[str, str]:
    """A booking run whose turn answering "Ann", sent with Idempotency-Key ``key``, lost
    its server at the ``held`` (collection, method, which calls) call; a retry meanwhile
    is told the request is still in progress. The workflow and the run."""
    booking_id = await create_booking(client)
    run_id: str = (await turn(client, booking_id))["run_id"]  # type: ignore[arg-type]
    database.hold(*held)
    crashed = asyncio.create_task(post(client, booking_id, key, **answer_to(run_id, "Ann")))
    await crash_while_held(database, crashed)
    early = await post(client, booking_id, key, **answer_to(run_id, "Ann"))
    assert early.status_code == 409 and early.json()["code"] == "request_in_progress"
    return booking_id, run_id


def inputs_received(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["message"] for e in events if e["type"] == "input_received"]


async def test_the_same_request_again_gets_the_first_answer_and_executes_nothing(
    client: Client, booking_id: str
) -> None:
    first = await post(client, booking_id, "start-1")
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    again = await post(client, booking_id, "start-1")
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content  # byte for byte
    run_id = first.json()["run_id"]
    runs = (await client.get(f"/v1/workflows/{booking_id}/runs")).json()["items"]
    assert [run["run_id"] for run in runs] == [run_id]  # one run, not two

    named = await post(client, booking_id, "name-1", **answer_to(run_id, "Ann"))
    # Spacing, the order of keys and the case of ids do not make another request.
    same = await client.post(
        f"/v1/workflows/{booking_id.upper()}/execute",
        content=f'{{"run_input":{{"message":"Ann"}}, "run_id":"{run_id.upper()}"}}',
        headers={"Idempotency-Key": "name-1", "Content-Type": "application/json"},
    )
    assert named.status_code == same.status_code == 200
    assert same.content == named.content and same.headers["idempotent-replayed"] == "true"
    run = (await client.get(f"/v1/runs/{run_id}")).json()
    assert run["turn"] == 2 and run["variables"] == {"name": "Ann"}
    assert inputs_received((await client.get(f"/v1/runs/{run_id}/events")).json()["events"]) == [
        "Ann"
    ]


async def test_the_key_with_another_request_is_refused(client: Client, booking_id: str) -> None:
    run_id = (await turn(client, booking_id))["run_id"]
    assert (await post(client, booking_id, "k", **answer_to(run_id, "Ann"))).status_code == 200
    for headers, body in (
        ({}, answer_to(run_id, "Bob")),  # another body
        ({}, {"run_id": run_id}),
        (STREAM, answer_to(run_id, "Ann")),  # the same body, answered another way
        (ASYNC, answer_to(run_id, "Ann")),
        ({"X-Execution-Source": "playground"}, answer_to(run_id, "Ann")),
    ):
        refused = await post(client, booking_id, "k", headers, **body)
        assert refused.status_code == 422, (headers, body)
        assert refused.json()["code"] == "idempotency_key_reused"
    other_version = await client.post(
        f"/v1/workflows/{booking_id}/execute?version=0",
        json=answer_to(run_id, "Ann"),
        headers={"Idempotency-Key": "k"},
    )
    assert other_version.status_code == 422
    assert (await client.get(f"/v1/runs/{run_id}")).json()["turn"] == 2  # nothing executed


async def test_twenty_parallel_duplicates_execute_once(
    racing: Racing, database: YieldingDatabase
) -> None:
    async with racing() as client:
        booking_id = await create_booking(client)
        run_id = (await turn(client, booking_id))["run_id"]  # type: ignore[arg-type]
        database.hold("runs", "update_one", is_turn_commit)
        tasks = [
            asyncio.create_task(post(client, booking_id, "dup", **answer_to(run_id, "Ann")))
            for _ in range(20)
        ]
        # Nineteen answer while the first is held inside its turn: the overlap is certain.
        await wait_until(lambda: sum(task.done() for task in tasks) == 19 and database.waiting == 1)
        database.release()
        responses = await asyncio.gather(*tasks)

        assert sorted(r.status_code for r in responses) == [200] + [409] * 19
        assert {r.json()["code"] for r in responses if r.status_code == 409} == {
            "request_in_progress"
        }
        winner = next(r for r in responses if r.status_code == 200)
        later = await post(client, booking_id, "dup", **answer_to(run_id, "Ann"))
        assert later.status_code == 200 and later.content == winner.content
        events = await stored_events(client, run_id)
        assert inputs_received(events) == ["Ann"]
        assert (await client.get(f"/v1/runs/{run_id}")).json()["turn"] == 2


async def test_twenty_parallel_duplicates_of_a_first_turn_create_one_run(
    racing: Racing, database: YieldingDatabase
) -> None:
    async with racing() as client:
        booking_id = await create_booking(client)
        responses = await asyncio.gather(*(post(client, booking_id, "new") for _ in range(20)))
        assert {r.status_code for r in responses} <= {200, 409}
        answered = [r for r in responses if r.status_code == 200]
        assert answered and {r.content for r in answered} == {answered[0].content}
        assert {r.json()["code"] for r in responses if r.status_code == 409} <= {
            "request_in_progress"
        }
        runs = (await client.get(f"/v1/workflows/{booking_id}/runs")).json()["items"]
        assert len(runs) == 1


async def test_a_key_is_forgotten_after_its_lifetime(
    client: Client, booking_id: str, clock: FakeClock
) -> None:
    first = await post(client, booking_id, "daily")
    clock.advance(24 * 3600 - 1)
    assert (await post(client, booking_id, "daily", inputs={"a": 1})).status_code == 422
    assert (await post(client, booking_id, "daily")).content == first.content
    clock.advance(1)  # 24 h after the first request: the key names no request any more
    again = await post(client, booking_id, "daily")
    assert again.status_code == 200 and "idempotent-replayed" not in again.headers
    assert again.json()["run_id"] != first.json()["run_id"]
    other = await post(client, booking_id, "daily", inputs={"a": 1})
    assert other.status_code == 422  # the key now names the request after its expiry


async def test_the_lifetime_is_a_setting(
    settings: Settings, database: YieldingDatabase, clock: FakeClock
) -> None:
    hourly = Settings(api_keys=settings.api_keys, idempotency_hours=1)
    app = create_app(hourly, database=database, clock=clock)  # type: ignore[arg-type]
    async with serving(app) as http:
        booking_id = await create_booking(http)
        first = await post(http, booking_id, "hourly")
        clock.advance(3599)
        assert (await post(http, booking_id, "hourly")).content == first.content
        clock.advance(1)
        assert (await post(http, booking_id, "hourly")).json()["run_id"] != first.json()["run_id"]


async def test_an_asynchronous_turn_replays_its_202(
    racing: Racing, database: YieldingDatabase
) -> None:
    async with racing() as client:
        booking_id = await create_booking(client)
        run_id = (await turn(client, booking_id))["run_id"]  # type: ignore[arg-type]
        database.hold("runs", "update_one", is_turn_commit)
        accepted = await post(client, booking_id, "later", ASYNC, **answer_to(run_id, "Ann"))
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["turn"] == 2
        assert accepted.headers["location"] == accepted.json()["status_url"]
        assert accepted.headers["preference-applied"] == "respond-async"
        await wait_until(lambda: database.waiting == 1)

        during = await post(client, booking_id, "later", ASYNC, **answer_to(run_id, "Ann"))
        database.release()
        await wait_until(lambda: database.waiting == 0)
        run = (await client.get(f"/v1/runs/{run_id}")).json()
        while run["status"] == "running":
            await asyncio.sleep(0)
            run = (await client.get(f"/v1/runs/{run_id}")).json()
        after = await post(client, booking_id, "later", ASYNC, **answer_to(run_id, "Ann"))

        for replayed in (during, after):
            assert replayed.status_code == 202 and replayed.content == accepted.content
            assert replayed.headers["location"] == accepted.headers["location"]
            assert replayed.headers["preference-applied"] == "respond-async"
            assert replayed.headers["idempotent-replayed"] == "true"
        assert run["turn"] == 2 and run["variables"] == {"name": "Ann"}
        assert inputs_received(await stored_events(client, run_id)) == ["Ann"]


async def test_a_streamed_turn_replays_as_a_stream(client: Client) -> None:
    workflow_id, run_id = await create_chat(client)
    first = await post(client, workflow_id, "said", STREAM, **answer_to(run_id, "hello there"))
    assert first.status_code == 200 and first.headers["content-type"].startswith(
        "text/event-stream"
    )
    streamed = parse_sse(first.text)
    assert "llm_delta" in [kind for kind, _ in streamed]

    again = await post(client, workflow_id, "said", STREAM, **answer_to(run_id, "hello there"))
    assert again.headers["content-type"].startswith("text/event-stream")
    assert again.headers["idempotent-replayed"] == "true"
    replayed = parse_sse(again.text)
    # The stored turn: every event as streamed, and the same result; LLM text is not
    # stored, so llm_completed carries it whole.
    assert replayed == [(kind, data) for kind, data in streamed if kind != "llm_delta"]
    result = replayed[-1][1]
    assert replayed[-1][0] == "turn_result" and result["turn"] == 2
    completed = next(data for kind, data in replayed if kind == "llm_completed")
    assert completed["data"]["text"] == "hello there"
    events = (await client.get(f"/v1/runs/{run_id}/events")).json()["events"]
    assert inputs_received(events) == ["hello there"]


async def test_keys_are_one_to_255_printable_characters(client: Client, booking_id: str) -> None:
    for key, message in (
        ("k" * 256, "is longer than 255 characters"),
        ("", "is empty"),
        ('""', "is empty"),
        ('"a"b"', "is badly quoted"),
        ('"a\\b"', "is badly quoted"),
    ):
        refused = await post(client, booking_id, key)
        assert refused.status_code == 400, key
        assert refused.json()["code"] == "validation_error"
        assert refused.json()["errors"] == [{"path": "headers.Idempotency-Key", "message": message}]
    runs = (await client.get(f"/v1/workflows/{booking_id}/runs")).json()["items"]
    assert runs == []  # nothing executed

    longest = await post(client, booking_id, "k" * 255)
    assert longest.status_code == 200
    assert (await post(client, booking_id, "k" * 255)).content == longest.content
    # The draft writes a key as a quoted string; unquoted, it is the same key.
    quoted = await post(client, booking_id, '"order \\"7\\""')
    assert quoted.status_code == 200
    assert (await post(client, booking_id, 'order "7"')).content == quoted.content


async def test_keys_belong_to_their_tenant(client: Client, booking_id: str) -> None:
    mine = await post(client, booking_id, "shared")
    client.headers["X-API-Key"] = KEY_B
    ending = {"start": "e", "nodes": {"e": {"type": "end"}}}
    created = await client.post("/v1/workflows", json={"name": "b", "definition": ending})
    theirs = await post(client, created.json()["workflow_id"], "shared")
    assert theirs.status_code == 200 and "idempotent-replayed" not in theirs.headers
    assert theirs.json()["status"] == "completed"
    assert mine.json()["run_id"] != theirs.json()["run_id"]
    # The first tenant's request, with its key, sent by another: no answer of the first
    # tenant's is replayed (nor its workflow found).
    client.headers["X-API-Key"] = KEY_A
    assert (await post(client, booking_id, "mine-only")).status_code == 200
    client.headers["X-API-Key"] = KEY_B
    other = await post(client, booking_id, "mine-only")
    assert other.status_code == 404 and other.json()["code"] == "not_found"


async def test_a_refused_request_does_not_spend_its_key(
    racing: Racing, database: YieldingDatabase
) -> None:
    async with racing() as client:
        booking_id = await create_booking(client)
        missing = await post(client, booking_id, "k", **answer_to("65f0c0ffee0000000000abcd", "x"))
        assert missing.status_code == 404
        run_id = (await turn(client, booking_id))["run_id"]  # type: ignore[arg-type]
        # A turn is executing: the keyed request is refused, and changes nothing.
        database.hold("runs", "update_one", is_turn_commit)
        busy = asyncio.create_task(post(client, booking_id, None, **answer_to(run_id, "Bob")))
        await wait_until(lambda: database.waiting == 1)
        refused = await post(client, booking_id, "k", **answer_to(run_id, "4"))
        assert refused.status_code == 409 and refused.json()["code"] == "turn_in_progress"
        database.release()
        assert (await busy).status_code == 200
        # The same key and request, once the run is free: executed, as if sent first now.
        answered = await post(client, booking_id, "k", **answer_to(run_id, "4"))
        assert answered.status_code == 200 and "idempotent-replayed" not in answered.headers
        assert answered.json()["turn"] == 3
        assert inputs_received(await stored_events(client, run_id)) == ["Bob", "4"]


async def test_a_stop_with_a_key_is_answered_again(client: Client, booking_id: str) -> None:
    run_id = (await turn(client, booking_id))["run_id"]
    stop = {"run_id": run_id, "run_input": {"command": "stop"}}
    first = await post(client, booking_id, "stop", **stop)
    again = await post(client, booking_id, "stop", **stop)
    assert first.status_code == again.status_code == 200 and again.content == first.content
    assert first.json()["status"] == "cancelled"
    # Without the key, the retry would be refused: the run has ended.
    assert (await post(client, booking_id, None, **stop)).status_code == 409


async def test_a_retry_after_a_crash_mid_turn_gets_the_recovered_turn(
    racing: Racing, database: YieldingDatabase, clock: FakeClock
) -> None:
    async with racing() as client:
        booking_id, run_id = await keyed_turn_crashed_at(
            client, database, "c", ("runs", "update_one", is_turn_commit)
        )
        clock.advance(LEASE + 1)  # its lease has expired: the retry recovers the turn
        retried = await post(client, booking_id, "c", **answer_to(run_id, "Ann"))
        assert retried.status_code == 200, retried.text
        assert retried.headers["idempotent-replayed"] == "true"
        answer = retried.json()
        assert answer["turn"] == 2 and answer["waiting_for"]["node_id"] == "ask_size"
        events = await stored_events(client, run_id)
        assert answer["events"] == [e for e in events if e["turn"] == 2]
        assert inputs_received(events) == ["Ann"]  # once, not once a try
        run = (await client.get(f"/v1/runs/{run_id}")).json()
        assert run["retry_count"] == 1 and run["turn"] == 2
        again = await post(client, booking_id, "c", **answer_to(run_id, "Ann"))
        assert again.content == retried.content


async def test_a_retry_after_a_crash_before_the_turn_was_linked(
    racing: Racing, database: YieldingDatabase, clock: FakeClock
) -> None:
    """The server dies between claiming the run and linking the key to the turn: the
    recovery of the turn links it, so the retry gets that turn rather than another."""
    async with racing() as client:
        booking_id, run_id = await keyed_turn_crashed_at(
            client, database, "b", ("idempotency_keys", "update_one", is_link)
        )
        clock.advance(LEASE + 1)
        retried = await post(client, booking_id, "b", **answer_to(run_id, "Ann"))
        assert retried.status_code == 200, retried.text
        assert retried.json()["turn"] == 2
        events = await stored_events(client, run_id)
        assert inputs_received(events) == ["Ann"]
        assert (await client.get(f"/v1/runs/{run_id}")).json()["retry_count"] == 1


async def test_a_retry_after_a_crash_before_the_run_was_claimed_executes_it(
    racing: Racing, database: YieldingDatabase, clock: FakeClock
) -> None:
    async with racing() as client:
        booking_id, run_id = await keyed_turn_crashed_at(
            client, database, "a", ("runs", "find_one_and_update", is_run_claim)
        )
        clock.advance(LEASE + 1)  # its attempt is gone, and nothing of it happened
        retried = await post(client, booking_id, "a", **answer_to(run_id, "Ann"))
        assert retried.status_code == 200 and "idempotent-replayed" not in retried.headers
        assert inputs_received(await stored_events(client, run_id)) == ["Ann"]
        run = (await client.get(f"/v1/runs/{run_id}")).json()
        assert run["retry_count"] == 0 and run["turn"] == 2


async def test_a_first_turn_whose_server_died_is_found_by_its_retry(
    racing: Racing, database: YieldingDatabase, clock: FakeClock
) -> None:
    """The run of a keyed first turn takes an id chosen with the key: a retry finds it."""
    async with racing() as client:
        booking_id = await create_booking(client)
        database.hold("idempotency_keys", "update_one", is_link)
        crashed = asyncio.create_task(post(client, booking_id, "first"))
        await crash_while_held(database, crashed)
        clock.advance(LEASE + 1)
        retried = await post(client, booking_id, "first")
        assert retried.status_code == 200, retried.text
        runs = (await client.get(f"/v1/workflows/{booking_id}/runs")).json()["items"]
        assert [run["run_id"] for run in runs] == [retried.json()["run_id"]]
        assert runs[0]["turn"] == 1


async def test_a_turn_recovered_by_the_sweep_answers_its_retry_even_after_later_turns(
    settings: Settings, database: YieldingDatabase, clock: FakeClock
) -> None:
    app = create_app(settings, database=database, clock=clock)  # type: ignore[arg-type]
    async with serving(app) as client:
        booking_id = await create_booking(client)
        run_id = (await turn(client, booking_id))["run_id"]  # type: ignore[arg-type]
        database.hold("runs", "update_one", is_turn_commit)
        crashed = asyncio.create_task(post(client, booking_id, "s", **answer_to(run_id, "Ann")))
        await crash_while_held(database, crashed)
        clock.advance(LEASE + 1)
        assert await app.state.runs.sweeper.sweep() == 1  # another process's sweep, say
        later = await turn(client, booking_id, run_id, "4")  # type: ignore[arg-type]
        assert later["turn"] == 3 and later["status"] == "paused"

        retried = await post(client, booking_id, "s", **answer_to(run_id, "Ann"))
        assert retried.status_code == 200, retried.text
        answer = retried.json()
        events = await stored_events(client, run_id)
        # The answer turn 2 had, not the run as it is now.
        assert answer["turn"] == 2 and answer["status"] == "waiting_for_user_input"
        assert answer["is_waiting_for_input"] and not answer["is_terminal"]
        assert answer["waiting_for"] == {
            "node_id": "ask_size",
            "kind": "message",
            "prompt": "For how many people?",
            "choices": None,
        }
        assert answer["events"] == [e for e in events if e["turn"] == 2]
        assert inputs_received(events) == ["Ann", "4"]


async def test_the_header_and_its_answers_are_documented(client: Client) -> None:
    spec = (await client.get("/schema/openapi.json")).json()
    execute = spec["paths"]["/v1/workflows/{workflow_id}/execute"]["post"]
    header = next(p for p in execute["parameters"] if p["name"] == "Idempotency-Key")
    assert header["in"] == "header" and not header["required"]
    assert "TANDEM_IDEMPOTENCY_HOURS" in header["description"]
    assert set(execute["responses"]["409"]["content"]["application/json"]["examples"]) >= {
        "request_in_progress"
    }
    assert (
        "idempotency_key_reused"
        in execute["responses"]["422"]["content"]["application/json"]["examples"]
    )
    for status in ("200", "202"):
        assert "Idempotent-Replayed" in execute["responses"][status]["headers"]
