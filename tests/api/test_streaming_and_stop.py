"""Streamed turns, and a stop that wins over an LLM call in flight (here and elsewhere)."""

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from app.config import Settings
from app.engine.llm import LlmCall, LlmReply
from app.llm.echo import EchoClient
from app.server import create_app
from tests.api.helpers import Client, serving, turn
from tests.support import YieldingDatabase

CHAT = {
    "start": "ask",
    "nodes": {
        "ask": {"type": "input", "prompt": "Say something", "save_as": "q", "next": "think"},
        "think": {"type": "llm", "prompt": "{{ q }}", "save_as": "a", "next": "ask"},
    },
}
LONG = " ".join(f"word{i}" for i in range(200))  # 200 words: 10 s at 50 ms a word


def parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    messages = []
    for block in text.replace("\r\n", "\n").strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        messages.append((fields["event"], json.loads(fields["data"])))
    return messages


async def create_chat(client: Any) -> tuple[str, str]:
    workflow_id = (
        await client.post("/v1/workflows", json={"name": "chat", "definition": CHAT})
    ).json()["workflow_id"]
    run_id = (await client.post(f"/v1/workflows/{workflow_id}/execute", json={})).json()["run_id"]
    return workflow_id, run_id


async def test_a_streamed_turn_sends_events_deltas_and_the_answer_last(client: Client) -> None:
    workflow_id, run_id = await create_chat(client)
    response = await client.post(
        f"/v1/workflows/{workflow_id}/execute",
        json={"run_id": run_id, "run_input": {"message": "hello there friend"}},
        headers={"Accept": "text/event-stream"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    messages = parse_sse(response.text)
    kinds = [kind for kind, _ in messages]
    assert kinds[-1] == "turn_result"
    assert kinds.index("llm_started") < kinds.index("llm_delta") < kinds.index("llm_completed")
    deltas = "".join(data["text"] for kind, data in messages if kind == "llm_delta")
    assert deltas == "hello there friend"
    result = messages[-1][1]
    streamed = [data for kind, data in messages if kind not in ("llm_delta", "turn_result")]
    assert streamed == result["events"]
    assert result["status"] == "waiting_for_user_input" and result["turn"] == 2
    stored = (await client.get(f"/v1/runs/{run_id}/events", params={"turn": 2})).json()["events"]
    assert stored == result["events"]  # deltas are sent, never stored


async def test_errors_before_the_turn_starts_are_plain_json(client: Client) -> None:
    workflow_id, run_id = await create_chat(client)
    stream = {"Accept": "text/event-stream"}
    missing = await client.post(
        "/v1/workflows/65f0c0ffee0000000000abcd/execute", json={}, headers=stream
    )
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    bad = await client.post(
        f"/v1/workflows/{workflow_id}/execute", json={"run_id": "x"}, headers=stream
    )
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_id"
    await turn(client, workflow_id, run_id, run_input={"command": "stop"})
    done = await client.post(
        f"/v1/workflows/{workflow_id}/execute", json={"run_id": run_id}, headers=stream
    )
    assert done.status_code == 409 and done.json()["code"] == "run_terminal"


class Watched(EchoClient):
    """The echo provider, slowed down, telling the test when generation has begun and
    whether it was abandoned."""

    def __init__(self) -> None:
        super().__init__(delay_seconds=0.05)
        self.generating = asyncio.Event()
        self.abandoned = False

    async def complete(self, call: LlmCall, on_delta: Callable[[str], None]) -> LlmReply:
        def seen(text: str) -> None:
            self.generating.set()
            on_delta(text)

        try:
            return await super().complete(call, seen)
        except asyncio.CancelledError:
            self.abandoned = True
            raise


async def stop_during_generation(
    executing: httpx.AsyncClient, stopping: httpx.AsyncClient, llm: Watched
) -> None:
    workflow_id, run_id = await create_chat(executing)
    started = time.monotonic()
    in_flight = asyncio.create_task(
        executing.post(
            f"/v1/workflows/{workflow_id}/execute",
            json={"run_id": run_id, "run_input": {"message": LONG}},
        )
    )
    await asyncio.wait_for(llm.generating.wait(), timeout=5)
    resume = await stopping.post(
        f"/v1/workflows/{workflow_id}/execute",
        json={"run_id": run_id, "run_input": {"message": "hi"}},
    )
    assert resume.status_code == 409 and resume.json()["code"] == "turn_in_progress"
    stop = await stopping.post(
        f"/v1/workflows/{workflow_id}/execute",
        json={"run_id": run_id, "run_input": {"command": "stop"}},
    )
    assert stop.status_code == 200 and stop.json()["status"] == "cancelled"

    answer = (await asyncio.wait_for(in_flight, timeout=2)).json()
    assert time.monotonic() - started < 2  # generating all of it would take 10 s
    assert llm.abandoned
    # The turn's events stored before the stop (maybe shown) stay; the stop ends that turn.
    assert answer["status"] == "cancelled" and answer["events"][-1]["type"] == "run_cancelled"
    assert answer["events"] == stop.json()["events"] and answer["turn"] == stop.json()["turn"] == 2
    assert "llm_completed" not in [e["type"] for e in answer["events"]]
    run = (await stopping.get(f"/v1/runs/{run_id}")).json()
    assert (
        run["status"] == "cancelled" and "a" not in run["variables"] and "q" not in run["variables"]
    )
    events = (await stopping.get(f"/v1/runs/{run_id}/events")).json()["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-len(answer["events"]) :] == answer["events"]


async def test_stop_abandons_an_llm_call_in_flight(
    settings: Settings, database: YieldingDatabase
) -> None:
    llm = Watched()
    async with serving(create_app(settings, database=database, llm=llm)) as http:  # type: ignore[arg-type]
        await stop_during_generation(http, http, llm)


async def test_a_stop_posted_to_another_process_reaches_the_turn(
    settings: Settings, database: YieldingDatabase
) -> None:
    llm = Watched()
    quick_poll = Settings(api_keys=settings.api_keys, poll_ms=50)
    executing_app = create_app(quick_poll, database=database, llm=llm)  # type: ignore[arg-type]
    stopping_app = create_app(quick_poll, database=database)  # type: ignore[arg-type]
    async with serving(executing_app) as executing, serving(stopping_app) as stopping:
        await stop_during_generation(executing, stopping, llm)


async def test_a_turn_whose_stream_is_dropped_completes_and_is_stored(
    settings: Settings, database: YieldingDatabase
) -> None:
    from app.api.streaming import stream_turn
    from app.services.turn_model import TurnRequest

    app = create_app(settings, database=database, llm=EchoClient(delay_seconds=0.001))  # type: ignore[arg-type]
    async with serving(app) as http:
        workflow_id, run_id = await create_chat(http)
        runs = app.state.runs
        from bson import ObjectId

        prepared = await runs.executor.prepare(
            "acme",
            ObjectId(workflow_id),
            TurnRequest(run_id=ObjectId(run_id), message="one two three four"),
        )
        stream = stream_turn(runs, prepared)
        async for message in stream:
            if message.event == "llm_delta":
                break
        await stream.aclose()  # the client went away mid-generation
        await runs.executor.drain()
        events = (await http.get(f"/v1/runs/{run_id}/events", params={"turn": 2})).json()["events"]
        assert [e["data"]["text"] for e in events if e["type"] == "llm_completed"] == [
            "one two three four"
        ]
        assert (await http.get(f"/v1/runs/{run_id}")).json()["variables"][
            "a"
        ] == "one two three four"


async def test_a_provider_failure_fails_the_run_and_keeps_it_readable(
    settings: Settings, database: YieldingDatabase
) -> None:
    from app.llm.openai_compatible import OpenAICompatibleClient
    from tests.llm.fake_openai import fake_openai

    with fake_openai([("status", 401)]) as fake:
        llm = OpenAICompatibleClient(
            base_url=fake.base_url,
            api_key="bad",
            default_model="m",
            timeout_seconds=5,
            max_retries=0,
        )
        async with serving(create_app(settings, database=database, llm=llm)) as http:  # type: ignore[arg-type]
            workflow_id, run_id = await create_chat(http)
            response = await http.post(
                f"/v1/workflows/{workflow_id}/execute",
                json={"run_id": run_id, "run_input": {"message": "hi"}},
            )
            assert response.status_code == 200
            answer = response.json()
            assert answer["status"] == "failed" and answer["is_terminal"]
            failure = answer["events"][-1]
            assert failure["type"] == "run_failed" and failure["data"]["node_id"] == "think"
            assert "401" in failure["data"]["error"]
            run = (await http.get(f"/v1/runs/{run_id}")).json()
            assert run["status"] == "failed" and run["variables"] == {"q": "hi"}
