"""The run stream (``GET /v1/runs/{id}/stream``): stored events, then live ones from this
or another server process, exact resumption with ``Last-Event-ID``, and the rule that a
``seq`` names one event forever, also when a stop wins over a streamed turn."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.server import create_app
from tests.api.helpers import serving_http as serving
from tests.api.llm_scripts import Scripted
from tests.api.sse import Message, messages
from tests.api.test_streaming_and_stop import create_chat
from tests.support import YieldingDatabase

SSE = {"Accept": "text/event-stream"}


@pytest.fixture
def quick(settings: Settings) -> Settings:
    return Settings(api_keys=settings.api_keys, poll_ms=20, stream_keepalive_seconds=0.2)


@asynccontextmanager
async def following(
    http: httpx.AsyncClient, run_id: str, last_event_id: str | None = None
) -> AsyncIterator[AsyncIterator[Message | str]]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    async with http.stream("GET", f"/v1/runs/{run_id}/stream", headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield messages(response)


async def read_all(http: httpx.AsyncClient, run_id: str, last: str | None = None) -> list[Message]:
    async with following(http, run_id, last) as stream:
        return [m async for m in stream if isinstance(m, Message)]


async def next_message(stream: AsyncIterator[Message | str]) -> Message:
    while not isinstance(message := await asyncio.wait_for(anext(stream), 5), Message):
        pass
    return message


def text_of(received: list[Message]) -> str:
    return "".join(m.data["text"] for m in received if m.event == "llm_delta")


def events_of(received: list[Message]) -> list[dict[str, Any]]:
    return [m.data for m in received if m.event != "llm_delta"]


async def stored(http: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = (await http.get(f"/v1/runs/{run_id}/events")).json()["events"]
    return events


async def test_a_waiting_run_streams_its_stored_events_from_any_id_and_closes(
    quick: Settings, database: YieldingDatabase
) -> None:
    llm = Scripted()
    async with serving(create_app(quick, database=database, llm=llm)) as http:  # type: ignore[arg-type]
        workflow_id, run_id = await create_chat(http)
        llm.say("Hi", None)
        await http.post(
            f"/v1/workflows/{workflow_id}/execute",
            json={"run_id": run_id, "run_input": {"message": "hello"}},
        )
        events = await stored(http, run_id)
        everything = await read_all(http, run_id)
        assert events_of(everything) == events and text_of(everything) == ""
        assert [m.id for m in everything] == [str(e["seq"]) for e in events]
        for position in range(len(events) + 1):
            rest = await read_all(http, run_id, str(position))
            assert events_of(rest) == events[position:]


async def test_bad_stream_requests_answer_as_json(
    quick: Settings, database: YieldingDatabase
) -> None:
    async with serving(create_app(quick, database=database)) as http:
        _, run_id = await create_chat(http)
        bad = await http.get(f"/v1/runs/{run_id}/stream", headers={"Last-Event-ID": "x"})
        assert bad.status_code == 400 and bad.json()["code"] == "validation_error"
        assert bad.json()["errors"][0]["path"] == "headers.Last-Event-ID"
        missing = await http.get("/v1/runs/65f0c0ffee0000000000abcd/stream")
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"


@pytest.mark.parametrize("elsewhere", [False, True], ids=["same process", "another process"])
async def test_a_turn_is_followed_live_and_resumed_exactly_at_every_message(
    quick: Settings, database: YieldingDatabase, elsewhere: bool
) -> None:
    """Reconnect after every single message, mid-text included: what the pieces add up to
    is exactly what one uninterrupted stream receives."""
    llm = Scripted()
    executing_app = create_app(quick, database=database, llm=llm)  # type: ignore[arg-type]
    following_app = create_app(quick, database=database) if elsewhere else executing_app  # type: ignore[arg-type]
    async with serving(executing_app) as executing, serving(following_app) as http:
        workflow_id, run_id = await create_chat(executing)
        before = len(await stored(http, run_id))
        accepted = await executing.post(
            f"/v1/workflows/{workflow_id}/execute",
            json={"run_id": run_id, "run_input": {"message": "hello"}},
            headers={"Prefer": "respond-async"},
        )
        assert accepted.status_code == 202
        await asyncio.wait_for(llm.started.wait(), 5)
        pieces = ["The ", "quick ", "brown ", "fox"]
        received: list[Message] = []
        last_id = str(before)
        async with following(http, run_id) as whole:
            # The stored events before the turn, then the turn's, live.
            while not received or received[-1].event != "llm_started":
                received.append(await next_message(whole))
            for piece in pieces:
                llm.say(piece)
                delta = await next_message(whole)  # each piece arrives before the next is given
                assert delta.event == "llm_delta" and delta.data["text"] == piece
                received.append(delta)
            llm.say(None)
            async for message in whole:
                if isinstance(message, Message):
                    received.append(message)
        # One message per connection, from where the last connection stopped.
        pieced: list[Message] = []
        while True:
            async with following(http, run_id, last_id) as stream:
                message = await anext((m async for m in stream if isinstance(m, Message)), None)
            if message is None:
                break
            pieced.append(message)
            assert message.id is not None
            last_id = message.id
        assert events_of(pieced) == events_of(received)[before:]
        assert events_of(received) == await stored(http, run_id)
        assert text_of(received) == "The quick brown fox"


async def test_reconnecting_mid_text_continues_inside_the_text(
    quick: Settings, database: YieldingDatabase
) -> None:
    llm = Scripted()
    async with serving(create_app(quick, database=database, llm=llm)) as http:  # type: ignore[arg-type]
        workflow_id, run_id = await create_chat(http)
        await http.post(
            f"/v1/workflows/{workflow_id}/execute",
            json={"run_id": run_id, "run_input": {"message": "hello"}},
            headers={"Prefer": "respond-async"},
        )
        await asyncio.wait_for(llm.started.wait(), 5)
        llm.say("one ", "two ")
        async with following(http, run_id) as stream:
            first_part = []
            while text_of(first_part) != "one two ":
                first_part.append(await next_message(stream))
        last = first_part[-1]
        assert last.event == "llm_delta" and last.id is not None and last.id.endswith(".8")
        async with following(http, run_id, last.id) as stream:
            # A keepalive says the stream waits for what comes next: then the rest comes.
            while await asyncio.wait_for(anext(stream), 5) != "keepalive":
                raise AssertionError("nothing new was said")
            llm.say("three", None)
            rest = [m async for m in stream if isinstance(m, Message)]
        assert text_of(rest) == "three"
        assert events_of(first_part) + events_of(rest) == await stored(http, run_id)


async def test_a_quiet_stream_sends_keepalive_comments(
    quick: Settings, database: YieldingDatabase
) -> None:
    llm = Scripted()
    async with serving(create_app(quick, database=database, llm=llm)) as http:  # type: ignore[arg-type]
        workflow_id, run_id = await create_chat(http)
        await http.post(
            f"/v1/workflows/{workflow_id}/execute",
            json={"run_id": run_id, "run_input": {"message": "hello"}},
            headers={"Prefer": "respond-async"},
        )
        await asyncio.wait_for(llm.started.wait(), 5)
        async with following(http, run_id) as stream:
            seen: list[Message | str] = []
            while "keepalive" not in seen:  # the LLM says nothing for a while
                seen.append(await asyncio.wait_for(anext(stream), 5))
            llm.say(None)
            async for _ in stream:
                pass


@pytest.mark.parametrize("elsewhere", [False, True], ids=["same process", "another process"])
async def test_a_stop_winning_over_a_streamed_turn_replaces_nothing_shown(
    quick: Settings, database: YieldingDatabase, elsewhere: bool
) -> None:
    llm = Scripted()
    executing_app = create_app(quick, database=database, llm=llm)  # type: ignore[arg-type]
    stopping_app = create_app(quick, database=database) if elsewhere else executing_app  # type: ignore[arg-type]
    async with serving(executing_app) as executing, serving(stopping_app) as stopping:
        workflow_id, run_id = await create_chat(executing)
        shown: list[Message] = []
        async with executing.stream(
            "POST",
            f"/v1/workflows/{workflow_id}/execute",
            json={"run_id": run_id, "run_input": {"message": "hello"}},
            headers=SSE,
        ) as response:
            stream = messages(response)
            await asyncio.wait_for(llm.started.wait(), 5)
            llm.say("Hel")
            while not shown or shown[-1].event != "llm_delta":
                shown.append(await next_message(stream))
            stop = await stopping.post(
                f"/v1/workflows/{workflow_id}/execute",
                json={"run_id": run_id, "run_input": {"command": "stop"}},
            )
            assert stop.status_code == 200 and stop.json()["status"] == "cancelled"
            async for message in stream:
                if isinstance(message, Message):
                    shown.append(message)
        assert shown[-1].event == "turn_result"
        answer = shown[-1].data
        assert answer["status"] == "cancelled" and answer["events"][-1]["type"] == "run_cancelled"
        events = await stored(stopping, run_id)
        by_seq = {e["seq"]: e for e in events}
        for message in shown:
            if message.seq is not None:
                assert by_seq[message.seq] == message.data  # shown, so stored as shown
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events[-1]["type"] == "run_cancelled" and events[-1]["turn"] == 2
        assert answer["events"] == [e for e in events if e["turn"] == 2]
