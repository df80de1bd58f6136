"""A blocking later turn sent to the process that committed the run's previous turn
executes on the run as that process wrote it and commits with one conditional write.
Whatever changed the run meanwhile (a turn or a stop in another process, a stop here),
nothing of the turn is stored, and it answers as a turn arriving after the change.

Two apps on one database are two server processes: each has its own cache."""

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from pymongo.errors import AutoReconnect

from app.config import Settings
from app.engine.llm import LlmCall, LlmReply
from app.server import create_app
from app.store.runs import RunStore
from tests.api.helpers import serving
from tests.api.llm_scripts import Scripted
from tests.api.test_concurrency import (
    create_booking,
    post_turn,
    stored_events,
    turn_held_at_its_commit,
)
from tests.api.test_first_turn import create, writes_to_runs
from tests.support import FakeClock, YieldingDatabase, flow, is_turn_commit

# Ask, answer with the LLM, ask again: every later turn calls the LLM once.
ECHOING = flow(
    ("ask", {"type": "input", "prompt": "Say something", "save_as": "said", "next": "think"}),
    ("think", {"type": "llm", "prompt": "{{ said }}", "save_as": "reply", "next": "ask"}),
)


def is_conditional_commit(args: tuple[Any, ...]) -> bool:
    """A runs.update_one call that commits a turn over the revision it read (a stop's
    write names the revision too, but not the claim)."""
    return is_turn_commit(args) and "revision" in args[0]


class CountingLlm:
    default_model = "counting"

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, call: LlmCall, on_delta: Callable[[str], None]) -> LlmReply:
        self.calls += 1
        return LlmReply(text=f"reply {self.calls}", usage=None)


def app_on(database: YieldingDatabase, settings: Settings, clock: FakeClock, **kw: Any) -> Any:
    return create_app(settings, database=database, clock=clock, **kw)  # type: ignore[arg-type]


async def execute(http: httpx.AsyncClient, workflow_id: str, **body: Any) -> httpx.Response:
    return await http.post(f"/v1/workflows/{workflow_id}/execute", json=body)


async def test_a_later_turn_in_the_same_process_is_one_conditional_write(
    settings: Settings, database: YieldingDatabase, clock: FakeClock
) -> None:
    async with serving(app_on(database, settings, clock)) as http:
        booking = await create_booking(http)
        run_id = (await execute(http, booking)).json()["run_id"]
        for message, status in (("Ann", "waiting_for_user_input"), ("4", "paused")):
            writes = writes_to_runs(database)
            answer = await execute(http, booking, run_id=run_id, run_input={"message": message})
            database.release()
            assert answer.status_code == 200, answer.text
            assert answer.json()["status"] == status
            assert writes == ["update_one"]
        run = (await http.get(f"/v1/runs/{run_id}")).json()
        assert run["turn"] == 3 and run["variables"] == {"name": "Ann", "size": "4"}
        events = await stored_events(http, run_id)
        assert events[-len(answer.json()["events"]) :] == answer.json()["events"]


async def test_a_turn_on_a_stale_copy_executes_again_on_the_run_as_stored(
    settings: Settings, database: YieldingDatabase, clock: FakeClock
) -> None:
    async with (
        serving(app_on(database, settings, clock)) as here,
        serving(app_on(database, settings, clock)) as elsewhere,
    ):
        booking = await create_booking(here)
        run_id = (await execute(here, booking)).json()["run_id"]  # cached here, turn 1
        named = await execute(elsewhere, booking, run_id=run_id, run_input={"message": "Ann"})
        assert named.status_code == 200 and named.json()["turn"] == 2

        writes = writes_to_runs(database)
        sized = await execute(here, booking, run_id=run_id, run_input={"message": "12"})
        database.release()
        # The copy of turn 1 did not match; the turn claimed the run as stored and ran on it.
        assert writes == ["update_one", "find_one_and_update", "update_one"]
        assert sized.status_code == 200, sized.text
        assert sized.json()["turn"] == 3
        texts = [e["data"].get("text") for e in sized.json()["events"] if e["type"] == "message"]
        assert texts == ["Sorry Ann, at most 8 people."]
        events = await stored_events(here, run_id)
        assert [e["turn"] for e in events] == sorted(e["turn"] for e in events)
        run = (await elsewhere.get(f"/v1/runs/{run_id}")).json()
        assert run["turn"] == 3 and run["variables"] == {"name": "Ann", "size": "12"}


async def test_a_stop_elsewhere_wins_over_a_turn_that_has_not_claimed_the_run(
    settings: Settings, database: YieldingDatabase, clock: FakeClock
) -> None:
    async with (
        serving(app_on(database, settings, clock)) as here,
        serving(app_on(database, settings, clock)) as elsewhere,
    ):
        _, run_id, in_flight = await turn_held_at_its_commit(here, database, is_conditional_commit)
        stop = await elsewhere.delete(f"/v1/runs/{run_id}")
        # The other process cannot know of a turn that has not claimed the run.
        assert stop.status_code == 200
        assert stop.json()["previous_status"] == "waiting_for_user_input"
        database.release()
        refused = await in_flight
        assert refused.status_code == 409 and refused.json()["code"] == "run_terminal"
        events = await stored_events(here, run_id)
        assert [e["type"] for e in events if e["turn"] == 2] == ["run_cancelled"]
        run = (await here.get(f"/v1/runs/{run_id}")).json()
        assert run["status"] == "cancelled" and run["variables"] == {}


async def test_a_stop_here_cancels_a_turn_that_has_not_claimed_the_run(
    settings: Settings, database: YieldingDatabase, clock: FakeClock
) -> None:
    async with serving(app_on(database, settings, clock)) as http:
        booking, run_id, in_flight = await turn_held_at_its_commit(
            http, database, is_conditional_commit
        )
        stop = await execute(http, booking, run_id=run_id, run_input={"command": "stop"})
        assert stop.status_code == 200, stop.text
        assert [e["type"] for e in stop.json()["events"]] == ["run_cancelled"]
        cancel_again = await http.delete(f"/v1/runs/{run_id}")
        assert cancel_again.json()["code"] == "run_terminal"
        database.release()
        refused = await in_flight
        assert refused.status_code == 409 and refused.json()["code"] == "run_terminal"
        run = (await http.get(f"/v1/runs/{run_id}")).json()
        assert run["status"] == "cancelled" and run["turn"] == 2 and run["variables"] == {}


async def test_a_cancel_here_says_the_run_was_running(
    settings: Settings, database: YieldingDatabase, clock: FakeClock
) -> None:
    async with serving(app_on(database, settings, clock)) as http:
        _, run_id, in_flight = await turn_held_at_its_commit(http, database, is_conditional_commit)
        cancel = await http.delete(f"/v1/runs/{run_id}")
        assert cancel.json()["previous_status"] == "running"
        database.release()
        assert (await in_flight).json()["code"] == "run_terminal"


async def test_a_second_turn_here_meanwhile_is_refused_at_once(
    settings: Settings, database: YieldingDatabase, clock: FakeClock
) -> None:
    async with serving(app_on(database, settings, clock)) as http:
        booking, run_id, first = await turn_held_at_its_commit(
            http, database, is_conditional_commit
        )
        second = await execute(http, booking, run_id=run_id, run_input={"message": "Bob"})
        assert second.status_code == 409 and second.json()["code"] == "turn_in_progress"
        database.release()
        answer = await first
        assert answer.status_code == 200 and answer.json()["turn"] == 2
        run = (await http.get(f"/v1/runs/{run_id}")).json()
        assert run["variables"] == {"name": "Ann"}


async def test_an_llm_turn_claims_the_run_before_calling_the_provider(
    settings: Settings, database: YieldingDatabase, clock: FakeClock
) -> None:
    llm = Scripted()
    quick = Settings(api_keys=settings.api_keys, poll_ms=5)
    async with serving(app_on(database, quick, clock, llm=llm)) as http:
        workflow_id = await create(http, ECHOING)
        run_id = (await execute(http, workflow_id)).json()["run_id"]
        in_flight = post_turn(http, workflow_id, run_id=run_id, run_input={"message": "hi"})
        await asyncio.wait_for(llm.started.wait(), 5)
        running = (await http.get(f"/v1/runs/{run_id}")).json()
        assert running["status"] == "running" and running["current_node"] == "think"
        llm.say("hel")
        await asyncio.sleep(0.05)  # progress records renew the claim meanwhile
        llm.say("lo", None)
        answer = await asyncio.wait_for(in_flight, 5)
        assert answer.status_code == 200, answer.text
        assert answer.json()["turn"] == 2

        # Claimed, recorded and committed by this process: its copy is still exact.
        writes = writes_to_runs(database)
        llm.started.clear()
        llm.say("again", None)
        again = await execute(http, workflow_id, run_id=run_id, run_input={"message": "ho"})
        database.release()
        assert again.status_code == 200 and again.json()["turn"] == 3
        assert writes[0] == "update_one" and "find_one_and_update" not in writes


async def test_a_stale_copy_never_calls_the_provider_twice(
    settings: Settings, database: YieldingDatabase, clock: FakeClock
) -> None:
    here_llm, elsewhere_llm = CountingLlm(), CountingLlm()
    async with (
        serving(app_on(database, settings, clock, llm=here_llm)) as here,
        serving(app_on(database, settings, clock, llm=elsewhere_llm)) as elsewhere,
    ):
        workflow_id = await create(here, ECHOING)
        run_id = (await execute(here, workflow_id)).json()["run_id"]
        other = await execute(elsewhere, workflow_id, run_id=run_id, run_input={"message": "a"})
        assert other.json()["output"] is None and elsewhere_llm.calls == 1
        answer = await execute(here, workflow_id, run_id=run_id, run_input={"message": "b"})
        assert answer.status_code == 200 and answer.json()["turn"] == 3
        assert here_llm.calls == 1
        run = (await here.get(f"/v1/runs/{run_id}")).json()
        assert run["variables"] == {"said": "b", "reply": "reply 1"}


async def test_a_turn_claims_once_however_many_llm_calls_it_makes(
    settings: Settings, database: YieldingDatabase, clock: FakeClock
) -> None:
    twice = flow(
        ("ask", {"type": "input", "prompt": "Say something", "save_as": "said", "next": "one"}),
        ("one", {"type": "llm", "prompt": "{{ said }}", "save_as": "first", "next": "two"}),
        ("two", {"type": "llm", "prompt": "{{ first }}", "save_as": "second", "next": "ask"}),
    )
    llm = CountingLlm()
    patient = Settings(api_keys=settings.api_keys, poll_ms=60_000)  # no progress record
    async with serving(app_on(database, patient, clock, llm=llm)) as http:
        workflow_id = await create(http, twice)
        run_id = (await execute(http, workflow_id)).json()["run_id"]
        writes = writes_to_runs(database)
        answer = await execute(http, workflow_id, run_id=run_id, run_input={"message": "hi"})
        database.release()
        assert answer.status_code == 200 and llm.calls == 2
        assert writes == ["update_one", "update_one"]  # the claim, then the commit
        run = (await http.get(f"/v1/runs/{run_id}")).json()
        assert run["variables"] == {"said": "hi", "first": "reply 1", "second": "reply 2"}


async def test_turns_spread_over_processes_soon_stop_trying_stale_copies(
    settings: Settings, database: YieldingDatabase, clock: FakeClock
) -> None:
    """A load balancer that alternates a run's turns between two processes: each copy is
    stale, so each process soon claims first, as it would without a cache."""
    async with (
        serving(app_on(database, settings, clock, llm=CountingLlm())) as one,
        serving(app_on(database, settings, clock, llm=CountingLlm())) as two,
    ):
        workflow_id = await create(one, ECHOING)
        run_id = (await execute(one, workflow_id)).json()["run_id"]
        stale_commits = 0

        def count_stale(args: tuple[Any, ...]) -> bool:
            nonlocal stale_commits
            stale_commits += is_conditional_commit(args)
            return False  # counted, never held

        database.hold("runs", "update_one", count_stale)
        for turn in range(2, 14):
            http = two if turn % 2 == 0 else one
            answer = await execute(http, workflow_id, run_id=run_id, run_input={"message": "x"})
            assert answer.status_code == 200 and answer.json()["turn"] == turn
        database.release()
        assert stale_commits <= 2  # each process's first try; then claims


def is_conditional_claim(args: tuple[Any, ...]) -> bool:
    """A runs.update_one call that claims a cached run over the revision it read."""
    if len(args) < 2 or "revision" not in args[0] or "claim" not in args[0]:
        return False
    written = args[1].get("$set", {})
    return "claim" in written and "state" not in written


def applied_then_lost(monkeypatch: Any, method: str) -> None:
    """The next call of ``RunStore.<method>`` is applied, but raises as if the connection
    closed before its answer came back."""
    original = getattr(RunStore, method)
    failures = [AutoReconnect("connection closed after the write")]

    async def lost(self: RunStore, *args: Any, **kwargs: Any) -> bool:
        result: bool = await original(self, *args, **kwargs)
        if failures:
            raise failures.pop()
        return result

    monkeypatch.setattr(RunStore, method, lost)


class JumpingClock(FakeClock):
    """A test clock that, once armed, jumps ahead after being read ``after`` times more:
    in the middle of a turn that reads it for each of its many events."""

    def __init__(self) -> None:
        super().__init__()
        self._jump: tuple[int, float] | None = None

    def jump(self, seconds: float, after: int) -> None:
        self._jump = (after, seconds)

    def __call__(self) -> Any:
        if self._jump is not None:
            after, seconds = self._jump
            self._jump = (after - 1, seconds) if after > 0 else None
            if after == 0:
                self.advance(seconds)
        return self.now


def counting_then(last: dict[str, Any]) -> dict[str, Any]:
    """Ask, count to 200 (many events, each stamped by the clock), then ``last``."""
    return flow(
        ("ask", {"type": "input", "prompt": "Go?", "save_as": "said", "next": "zero"}),
        ("zero", {"type": "set", "values": {"n": "0"}, "next": "count"}),
        ("count", {"type": "set", "values": {"n": "n + 1"}, "next": "check"}),
        (
            "check",
            {"type": "switch", "cases": [{"when": "n < 200", "next": "count"}], "default": "last"},
        ),
        ("last", last),
        limits={"max_steps_per_turn": 1000},
    )


async def test_a_run_that_expires_during_its_turn_is_not_brought_back(
    settings: Settings, database: YieldingDatabase
) -> None:
    clock = JumpingClock()
    async with serving(app_on(database, settings, clock)) as http:
        workflow_id = await create(http, counting_then({"type": "end", "output": {}}))
        run_id = (await execute(http, workflow_id)).json()["run_id"]
        clock.jump(31 * 86400, after=50)  # past the run's cleanup_after (30 days), mid-turn
        answer = await execute(http, workflow_id, run_id=run_id, run_input={"message": "go"})
        assert answer.status_code == 404 and answer.json()["code"] == "not_found"
        assert (await http.get(f"/v1/runs/{run_id}")).status_code == 404


async def test_a_run_that_expires_before_its_turn_claims_it_is_not_brought_back(
    settings: Settings, database: YieldingDatabase
) -> None:
    clock, llm = JumpingClock(), CountingLlm()
    async with serving(app_on(database, settings, clock, llm=llm)) as http:
        think = {"type": "llm", "prompt": "{{ said }}", "save_as": "reply", "next": "ask"}
        workflow_id = await create(http, counting_then(think))
        run_id = (await execute(http, workflow_id)).json()["run_id"]
        clock.jump(31 * 86400, after=50)
        answer = await execute(http, workflow_id, run_id=run_id, run_input={"message": "go"})
        assert answer.status_code == 404 and llm.calls == 0
        assert (await http.get(f"/v1/runs/{run_id}")).status_code == 404


async def test_a_commit_applied_whose_answer_was_lost_is_not_executed_again(
    settings: Settings, database: YieldingDatabase, clock: FakeClock, monkeypatch: Any
) -> None:
    applied_then_lost(monkeypatch, "commit_unchanged")
    async with serving(app_on(database, settings, clock)) as http:
        booking = await create_booking(http)
        run_id = (await execute(http, booking)).json()["run_id"]
        answer = await execute(http, booking, run_id=run_id, run_input={"message": "Ann"})
        assert answer.status_code == 200 and answer.json()["turn"] == 2
        run = (await http.get(f"/v1/runs/{run_id}")).json()
        assert run["turn"] == 2 and run["variables"] == {"name": "Ann"}
        events = await stored_events(http, run_id)
        assert [e["type"] for e in events].count("input_received") == 1


async def test_a_claim_applied_whose_answer_was_lost_is_held_all_the_same(
    settings: Settings, database: YieldingDatabase, clock: FakeClock, monkeypatch: Any
) -> None:
    applied_then_lost(monkeypatch, "claim_unchanged")
    llm = CountingLlm()
    async with serving(app_on(database, settings, clock, llm=llm)) as http:
        workflow_id = await create(http, ECHOING)
        run_id = (await execute(http, workflow_id)).json()["run_id"]
        answer = await execute(http, workflow_id, run_id=run_id, run_input={"message": "a"})
        assert answer.status_code == 200 and answer.json()["turn"] == 2 and llm.calls == 1
        run = (await http.get(f"/v1/runs/{run_id}")).json()
        assert run["status"] == "waiting_for_user_input" and run["variables"]["reply"] == "reply 1"


async def test_a_claim_that_failed_never_lets_the_provider_be_called_twice(
    settings: Settings, database: YieldingDatabase, clock: FakeClock
) -> None:
    here_llm, elsewhere_llm = CountingLlm(), CountingLlm()
    async with (
        serving(app_on(database, settings, clock, llm=here_llm)) as here,
        serving(app_on(database, settings, clock, llm=elsewhere_llm)) as elsewhere,
    ):
        workflow_id = await create(here, ECHOING)
        run_id = (await execute(here, workflow_id)).json()["run_id"]
        await execute(elsewhere, workflow_id, run_id=run_id, run_input={"message": "a"})
        database.fail_once("runs", "update_one", is_conditional_claim, AutoReconnect("blip"))
        answer = await execute(here, workflow_id, run_id=run_id, run_input={"message": "b"})
        assert answer.status_code == 200 and answer.json()["turn"] == 3
        assert here_llm.calls == 1
