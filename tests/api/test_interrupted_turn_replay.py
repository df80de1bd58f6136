"""A turn executed again after its server died mid-turn replays what its first attempt
had stored (and so perhaps shown), LLM replies included, instead of storing it twice."""

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from app.config import Settings
from app.engine.llm import LlmCall, LlmReply
from app.server import create_app
from tests.api.helpers import serving, turn
from tests.support import FakeClock, YieldingDatabase, flow

TWO_CALLS = flow(
    ("ask", {"type": "input", "prompt": "Say something", "save_as": "q", "next": "first"}),
    ("first", {"type": "llm", "prompt": "{{ q }}", "save_as": "a", "next": "second"}),
    ("second", {"type": "llm", "prompt": "{{ a }}, again", "save_as": "b", "next": "ask"}),
)


class Unrepeatable:
    """An LLM that never answers the same twice, as real ones do; its first call of a
    follow-up prompt waits until released, so that the turn can die there."""

    default_model = "unrepeatable"

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.following_up = asyncio.Event()
        self.release = asyncio.Event()

    async def complete(self, call: LlmCall, on_delta: Callable[[str], None]) -> LlmReply:
        prompt = call.messages[-1].content
        self.prompts.append(prompt)
        if prompt.endswith("again"):
            self.following_up.set()
            await self.release.wait()
        text = f"reply {len(self.prompts)}"
        on_delta(text)
        return LlmReply(text=text)


async def stored_of_turn(http: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    """The events of turn 2 stored so far (a turn in flight records them as it goes)."""
    answer = await http.get(f"/v1/runs/{run_id}/events", params={"turn": 2})
    events: list[dict[str, Any]] = answer.json()["events"]
    return events


async def test_a_recovered_turn_keeps_the_llm_reply_its_first_attempt_stored(
    settings: Settings, database: YieldingDatabase, clock: FakeClock
) -> None:
    llm = Unrepeatable()
    quick_poll = Settings(api_keys=settings.api_keys, poll_ms=10)
    app = create_app(quick_poll, database=database, clock=clock, llm=llm)  # type: ignore[arg-type]
    async with serving(app) as http:
        created = await http.post("/v1/workflows", json={"name": "two", "definition": TWO_CALLS})
        workflow_id = created.json()["workflow_id"]
        run_id = (await turn(http, workflow_id))["run_id"]  # type: ignore[arg-type]
        dying = asyncio.create_task(
            http.post(
                f"/v1/workflows/{workflow_id}/execute",
                json={"run_id": run_id, "run_input": {"message": "hi"}},
            )
        )
        await asyncio.wait_for(llm.following_up.wait(), timeout=5)
        deadline = time.monotonic() + 5
        while "llm_completed" not in [e["type"] for e in await stored_of_turn(http, run_id)]:
            assert time.monotonic() < deadline, "the first reply was never recorded"
            await asyncio.sleep(0.01)
        shown = await stored_of_turn(http, run_id)  # what a stream may have shown
        dying.cancel()  # the server dies in the second LLM call; its claim stays
        await asyncio.gather(dying, return_exceptions=True)

        llm.release.set()
        clock.advance(31)  # past the lease: reading the run executes the turn again
        run = (await http.get(f"/v1/runs/{run_id}")).json()
        events = (await http.get(f"/v1/runs/{run_id}/events")).json()["events"]

    assert run["status"] == "waiting_for_user_input" and run["retry_count"] == 1
    # The first call is not made again: its stored reply stands, and the turn goes on from it.
    assert llm.prompts == ["hi", "reply 1, again", "reply 1, again"]
    assert run["variables"]["a"] == "reply 1" and run["variables"]["b"] == "reply 3"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    second_turn = [e for e in events if e["turn"] == 2]
    assert [e["type"] for e in second_turn].count("input_received") == 1
    completed = [e["data"]["text"] for e in second_turn if e["type"] == "llm_completed"]
    assert completed == ["reply 1", "reply 3"]
    assert second_turn[: len(shown)] == shown  # what was stored before it died stays
