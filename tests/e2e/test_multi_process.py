"""Two ``python -m app`` processes on one MongoDB, as a deployment with replicas runs them:
a turn executing in one is followed, cancelled and, once its process is killed, executed
again from the other; a version published through one is what the other's next first
turn pins.

The store is the wire-level MongoDB double in a process of its own (or the MongoDB of
``MONGODB_URI``), so that both servers talk to it through PyMongo's real
``AsyncMongoClient``, and it outlives a server killed with SIGKILL. The servers run with
a short lease, poll interval and sweep interval, and the built-in ``echo`` LLM provider
slowed down to ``WORD_DELAY`` a word, so that an LLM turn takes long enough to be
watched, yet each test takes a few seconds.
"""

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient, MongoClient

from tests.e2e.processes import ServerProcess, SseMessage, poll, server_environment, sse_messages
from tests.mongo_double import running_in_process
from tests.support import flow

CHAT = "000000000000000000000003"  # the bundled chat assistant: ask, check, answer (LLM), ...
KEY, TENANT = "mp-key", "mp"
LEASE_SECONDS = 2.0
POLL_MS = 50
SWEEP_SECONDS = 0.5
WORD_DELAY = 0.05
STREAM_END_SECONDS = 10.0
# Far longer than a publish takes to store its version, even on a busy machine.
LATEST_VERSION_SECONDS = 2.0


def words(count: int) -> str:
    return " ".join(f"word{i}" for i in range(count))


@pytest.fixture(scope="module")
def mongodb_uri() -> Iterator[str]:
    """The MongoDB of MONGODB_URI, else a wire double in a process of its own."""
    uri = os.environ.get("MONGODB_URI")
    if uri:
        yield uri
        return
    with running_in_process() as double:
        yield double.uri


@dataclass
class Cluster:
    first: ServerProcess
    second: ServerProcess
    mongodb_uri: str
    database_name: str


@pytest.fixture
def cluster(mongodb_uri: str, tmp_path: Path) -> Iterator[Cluster]:
    """Two servers on one database, started at the same time, as replicas are."""
    database_name = f"tandem_mp_{uuid.uuid4().hex[:8]}"
    env = server_environment(
        {
            "MONGODB_URI": mongodb_uri,
            "TANDEM_DB_NAME": database_name,
            "TANDEM_API_KEYS": f"{KEY}:{TENANT}",
            "TANDEM_EXAMPLES_TENANT": TENANT,
            "TANDEM_LEASE_SECONDS": str(LEASE_SECONDS),
            "TANDEM_POLL_MS": str(POLL_MS),
            "TANDEM_SWEEP_SECONDS": str(SWEEP_SECONDS),
            "TANDEM_ECHO_DELAY_MS": str(WORD_DELAY * 1000),
            "TANDEM_LATEST_VERSION_MS": str(LATEST_VERSION_SECONDS * 1000),
        }
    )
    servers = [ServerProcess.start(name, env, tmp_path) for name in ("first", "second")]
    try:
        for server in servers:
            server.wait_until_ready()
        yield Cluster(servers[0], servers[1], mongodb_uri, database_name)
    finally:
        for server in servers:
            server.stop()
        with MongoClient(mongodb_uri) as mongo:
            mongo.drop_database(database_name)


def assert_no_errors(*servers: ServerProcess) -> None:
    """Whatever the test did to them, the servers logged no error and no traceback."""
    for server in servers:
        log = server.log()
        assert "ERROR" not in log and "Traceback" not in log, f"{server.name}:\n{log}"


@contextlib.asynccontextmanager
async def client(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=server.url, headers={"X-API-Key": KEY}, timeout=10
    ) as http:
        yield http


async def start_chat(http: httpx.AsyncClient) -> str:
    """Turn 1 of the chat assistant: the run waits at its first question."""
    first = await http.post(f"/v1/workflows/{CHAT}/execute", json={})
    assert first.status_code == 200, first.text
    assert first.json()["waiting_for"]["node_id"] == "ask"
    run_id: str = first.json()["run_id"]
    return run_id


async def ask_async(http: httpx.AsyncClient, run_id: str, message: str) -> dict[str, Any]:
    """Turn 2 with ``Prefer: respond-async``: answered ``202`` while the LLM still talks."""
    response = await http.post(
        f"/v1/workflows/{CHAT}/execute",
        json={"run_id": run_id, "run_input": {"message": message}},
        headers={"Prefer": "respond-async"},
    )
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted | {"location": response.headers["location"]}


async def read_run(http: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    response = await http.get(f"/v1/runs/{run_id}")
    assert response.status_code == 200, response.text
    run: dict[str, Any] = response.json()
    return run


async def stored_events(http: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    response = await http.get(f"/v1/runs/{run_id}/events")
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # no gap, no repeat
    return events


@dataclass
class FollowedStream:
    """``GET /v1/runs/{id}/stream`` read in the background, every message kept."""

    messages: list[SseMessage] = field(default_factory=list)
    task: "asyncio.Task[None] | None" = None

    @classmethod
    def open(cls, http: httpx.AsyncClient, run_id: str) -> "FollowedStream":
        followed = cls()
        followed.task = asyncio.create_task(followed._read(http, run_id))
        return followed

    async def _read(self, http: httpx.AsyncClient, run_id: str) -> None:
        async with http.stream("GET", f"/v1/runs/{run_id}/stream") as response:
            assert response.status_code == 200
            async with contextlib.aclosing(sse_messages(response)) as messages:
                async for message in messages:
                    self.messages.append(message)

    async def closed(self) -> list[SseMessage]:
        """Every message, once the server has closed the stream."""
        assert self.task is not None
        await asyncio.wait_for(self.task, STREAM_END_SECONDS)
        return self.messages


def events_of(messages: list[SseMessage]) -> list[dict[str, Any]]:
    return [m.data for m in messages if m.event != "llm_delta"]


def text_of(messages: list[SseMessage]) -> str:
    return "".join(m.data["text"] for m in messages if m.event == "llm_delta")


async def test_a_turn_in_one_process_is_followed_and_cancelled_from_the_other(
    cluster: Cluster,
) -> None:
    message = words(40)  # 2 s of LLM text
    async with client(cluster.first) as first, client(cluster.second) as second:
        run_id = await start_chat(first)
        before = await read_run(second, run_id)
        assert before["status"] == "waiting_for_user_input" and before["current_node"] == "ask"

        started = time.monotonic()
        accepted = await ask_async(first, run_id, message)
        run_url = f"{cluster.first.url}/v1/runs/{run_id}"
        assert accepted == {
            "run_id": run_id,
            "turn": 2,
            "status": "running",
            "status_url": run_url,
            "stream_url": f"{run_url}/stream",
            "cancel_url": f"{run_url}/cancel",
            "location": run_url,
        }

        stream = FollowedStream.open(second, run_id)

        async def text_so_far() -> str:
            return text_of(stream.messages)

        # The LLM text generated in the first process is shown live by the second.
        await poll(
            text_so_far,
            lambda text: len(text.split()) >= 3,
            "LLM text streamed by the second process",
        )
        running = await poll(
            lambda: read_run(second, run_id),
            lambda run: run["current_node"] == "answer",
            "the turn shown at its LLM node",
        )
        assert running["status"] == "running"
        assert running["completed_nodes"] > before["completed_nodes"]
        assert running["progress"] > before["progress"]
        shown_before_cancel = list(stream.messages)

        cancel = await second.delete(f"/v1/runs/{run_id}")
        assert cancel.status_code == 200, cancel.text
        assert cancel.json() | {"message": ""} == {
            "run_id": run_id,
            "cancelled": True,
            "previous_status": "running",
            "message": "",
        }
        text_before_cancel = text_of(shown_before_cancel)
        assert text_before_cancel and message.startswith(text_before_cancel)

        messages = await stream.closed()  # the run has ended: its stream closes
        cancelled = await read_run(first, run_id)
        assert cancelled["status"] == "cancelled" and cancelled["turn"] == 2
        assert cancelled["variables"] == before["variables"]  # nothing of the turn kept
        events = await stored_events(first, run_id)

        # The first process's turn, had it gone on, would have ended by now: it stored
        # nothing after the cancel.
        await asyncio.sleep(max(0.0, started + 40 * WORD_DELAY + 0.3 - time.monotonic()))
        assert await read_run(first, run_id) == cancelled
        assert await stored_events(second, run_id) == events

    second_turn = [e for e in events if e["turn"] == 2]
    assert second_turn[-1]["type"] == "run_cancelled"
    assert "llm_completed" not in [e["type"] for e in second_turn]
    assert "llm_started" in [e["type"] for e in second_turn]
    # A seq names one event forever: what the stream showed before the cancel is stored
    # under the same seq, and the stream showed the run's events exactly as stored.
    for shown in events_of(shown_before_cancel):
        assert events[shown["seq"] - 1] == shown
    assert events_of(messages) == events
    assert message.startswith(text_of(messages))
    assert_no_errors(cluster.first, cluster.second)  # the first lost its turn quietly


async def test_a_stream_resumed_mid_text_misses_nothing_and_repeats_nothing(
    cluster: Cluster,
) -> None:
    message = words(40)  # 2 s of LLM text
    async with client(cluster.first) as first, client(cluster.second) as second:
        run_id = await start_chat(first)
        await ask_async(first, run_id, message)

        received: list[SseMessage] = []
        async with second.stream("GET", f"/v1/runs/{run_id}/stream") as response:
            assert response.status_code == 200
            async with contextlib.aclosing(sse_messages(response)) as messages:
                async for sse in messages:
                    received.append(sse)
                    if len([m for m in received if m.event == "llm_delta"]) == 3:
                        break  # the client goes away in the middle of the text
        last_id = received[-1].id
        assert last_id is not None and "." in last_id  # <seq>.<characters>
        assert 0 < len(text_of(received)) < len(message)

        resumed = {"Last-Event-ID": last_id}
        async with second.stream("GET", f"/v1/runs/{run_id}/stream", headers=resumed) as response:
            assert response.status_code == 200
            async with contextlib.aclosing(sse_messages(response)) as messages:
                async for sse in messages:
                    received.append(sse)
        events = await stored_events(first, run_id)

    assert events[-1]["type"] == "waiting_for_input" and events[-1]["turn"] == 2
    assert events_of(received) == events
    completed = [e for e in events if e["type"] == "llm_completed"]
    assert len(completed) == 1 and completed[0]["data"]["text"] == message
    assert text_of(received) == message
    # Each message's id says where it is, so that a client can resume after any of them.
    seq, characters = 0, 0
    for sse in received:
        assert sse.id is not None
        if sse.event == "llm_delta":
            characters += len(sse.data["text"])
            assert sse.id == f"{seq}.{characters}"
        else:
            seq, characters = sse.data["seq"], 0
            assert sse.id == str(seq)
    assert_no_errors(cluster.first, cluster.second)


async def test_a_version_published_through_one_process_is_pinned_next_by_the_other(
    cluster: Cluster,
) -> None:
    def ending(value: str) -> dict[str, Any]:
        return flow(("done", {"type": "end", "output": {"v": f"'{value}'"}}))

    async with client(cluster.first) as first, client(cluster.second) as second:
        created = await first.post("/v1/workflows", json={"name": "v", "definition": ending("0")})
        assert created.status_code == 201, created.text
        execute = f"/v1/workflows/{created.json()['workflow_id']}/execute"
        # The second process reads the latest version and keeps it for a while
        # (app/services/latest_versions.py); only the publish's wait makes it read again.
        assert (await second.post(execute, json={})).json()["output"] == {"v": "0"}
        started = time.monotonic()
        published = await first.post(
            f"/v1/workflows/{created.json()['workflow_id']}/versions",
            json={"definition": ending("1")},
        )
        assert published.status_code == 201 and published.json()["version"] == 1
        assert time.monotonic() - started >= LATEST_VERSION_SECONDS
        answer = (await second.post(execute, json={})).json()
        assert answer["version"] == 1 and answer["output"] == {"v": "1"}
    assert_no_errors(cluster.first, cluster.second)


async def test_a_turn_whose_process_is_killed_is_executed_again_by_the_other_once(
    cluster: Cluster,
) -> None:
    message = words(20)  # 1 s of LLM text
    async with client(cluster.first) as first, client(cluster.second) as second:
        run_id = await start_chat(first)
        await ask_async(first, run_id, message)
        await poll(
            lambda: read_run(second, run_id),
            lambda run: run["status"] == "running" and run["current_node"] == "answer",
            "the turn shown running at its LLM node",
        )
        # What the first process had stored of the turn (and so could have shown).
        shown = [e for e in await stored_events(second, run_id) if e["turn"] == 2]
        assert [e["type"] for e in shown][:2] == ["node_started", "input_received"]
        assert "llm_started" in [e["type"] for e in shown]
        cluster.first.kill()
        killed = time.monotonic()

        # Watched in the database, not through the second server: reading the run there
        # would itself execute the turn again, and this is about the sweep doing it.
        async with AsyncMongoClient(cluster.mongodb_uri) as mongo:
            runs = mongo[cluster.database_name]["runs"]
            document = await poll(
                lambda: runs.find_one({"_id": ObjectId(run_id)}),
                lambda run: run is not None and run["claim"] is None,
                "the interrupted turn executed again and committed",
                within=LEASE_SECONDS + 10,
                interval=0.05,
            )
        recovered_after = time.monotonic() - killed
        assert document is not None and document["state"]["turn"] == 2

        run = await read_run(second, run_id)
        events = await stored_events(second, run_id)

    assert run["status"] == "waiting_for_user_input" and run["turn"] == 2
    assert run["waiting_for"]["prompt"] == "Anything else?"
    assert run["variables"]["reply"] == message and run["retry_count"] == 1
    second_turn = [e for e in events if e["turn"] == 2]
    received = [e for e in second_turn if e["type"] == "input_received"]
    assert [e["data"]["message"] for e in received] == [message]  # once, not once a try
    completed = [e for e in second_turn if e["type"] == "llm_completed"]
    assert [e["data"]["text"] for e in completed] == [message]
    assert second_turn[-1]["type"] == "waiting_for_input"
    assert second_turn[: len(shown)] == shown  # each keeps its seq across the crash
    log = cluster.second.log()
    assert "executing turn 2 again after its server stopped" in log
    assert "replayed as" not in log  # the replay went the way the first attempt had
    assert_no_errors(cluster.second)
    # Within a lease, a sweep interval and the LLM's second run (with room for a slow CI).
    assert recovered_after < LEASE_SECONDS + SWEEP_SECONDS + 20 * WORD_DELAY + 5


async def test_a_keyed_turn_whose_process_is_killed_is_executed_once_for_its_retry(
    cluster: Cluster,
) -> None:
    """A client posts a turn with an Idempotency-Key; the process serving it dies mid-turn
    and the connection drops; the client retries on the other process. The retry gets the
    answer of the turn, executed again once (by the sweep, or by the retry reading the run,
    whichever comes first): never a second turn for the same message."""
    message = words(40)  # 2 s of LLM text
    execute = f"/v1/workflows/{CHAT}/execute"
    keyed = {"Idempotency-Key": f"retry-{uuid.uuid4()}"}
    async with client(cluster.first) as first, client(cluster.second) as second:
        run_id = await start_chat(first)
        body = {"run_id": run_id, "run_input": {"message": message}}
        in_flight = asyncio.create_task(first.post(execute, json=body, headers=keyed))
        await poll(
            lambda: read_run(second, run_id),
            lambda run: run["status"] == "running" and run["current_node"] == "answer",
            "the keyed turn shown running at its LLM node",
        )
        cluster.first.kill()
        with contextlib.suppress(httpx.TransportError):
            await in_flight
        assert in_flight.exception() is not None  # the client never got its answer

        # At once: the turn's lease (renewed until the kill) has not expired yet.
        early = await second.post(execute, json=body, headers=keyed)
        assert early.status_code == 409, early.text
        assert early.json()["code"] == "request_in_progress"

        async def retry() -> httpx.Response:
            return await second.post(execute, json=body, headers=keyed)

        retried = await poll(
            retry,
            lambda response: response.status_code != 409,
            "the retry answered",
            within=LEASE_SECONDS + 40 * WORD_DELAY + 10,
            interval=0.1,
        )
        assert retried.status_code == 200, retried.text
        assert retried.headers["idempotent-replayed"] == "true"
        again = await retry()
        assert again.status_code == 200 and again.content == retried.content
        run = await read_run(second, run_id)
        events = await stored_events(second, run_id)

    answer = retried.json()
    assert answer["turn"] == 2 and answer["waiting_for"]["prompt"] == "Anything else?"
    assert answer["events"] == [e for e in events if e["turn"] == 2]
    received = [e["data"]["message"] for e in events if e["type"] == "input_received"]
    assert received == [message]  # once, not once a try
    completed = [e["data"]["text"] for e in events if e["type"] == "llm_completed"]
    assert completed == [message]
    assert run["turn"] == 2 and run["retry_count"] == 1
    assert_no_errors(cluster.second)


async def test_a_keyed_asynchronous_turn_whose_process_is_killed_keeps_its_202(
    cluster: Cluster,
) -> None:
    message = words(20)  # 1 s of LLM text
    execute = f"/v1/workflows/{CHAT}/execute"
    keyed = {"Idempotency-Key": f"async-{uuid.uuid4()}", "Prefer": "respond-async"}
    async with client(cluster.first) as first, client(cluster.second) as second:
        run_id = await start_chat(first)
        body = {"run_id": run_id, "run_input": {"message": message}}
        accepted = await first.post(execute, json=body, headers=keyed)
        assert accepted.status_code == 202, accepted.text
        await poll(
            lambda: read_run(second, run_id),
            lambda run: run["current_node"] == "answer",
            "the turn shown at its LLM node",
        )
        cluster.first.kill()

        retried = await second.post(execute, json=body, headers=keyed)
        assert retried.status_code == 202 and retried.content == accepted.content
        assert retried.headers["location"] == accepted.headers["location"]
        assert retried.headers["idempotent-replayed"] == "true"
        run = await poll(
            lambda: read_run(second, run_id),
            lambda run: run["status"] != "running",
            "the turn executed again and committed",
            within=LEASE_SECONDS + 20 * WORD_DELAY + 10,
            interval=0.1,
        )
        events = await stored_events(second, run_id)

    assert run["status"] == "waiting_for_user_input" and run["turn"] == 2
    assert run["variables"]["reply"] == message and run["retry_count"] == 1
    received = [e["data"]["message"] for e in events if e["type"] == "input_received"]
    assert received == [message]
    assert_no_errors(cluster.second)
