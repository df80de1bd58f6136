import json
from collections.abc import Callable
from importlib import resources
from typing import Any

from app.engine.llm import LlmCall, LlmError, LlmReply
from app.engine.state import RunStatus
from tests.engine.helpers import Conversation, texts, types
from tests.support import BOOKING, flow

END = ("end", {"type": "end"})


async def test_booking_conversation_from_greeting_to_output() -> None:
    chat = Conversation(BOOKING)
    first = await chat.send()
    assert types(first.events) == ["run_started", "message", "waiting_for_input"]
    assert first.state.waiting_for is not None
    assert first.state.waiting_for.prompt == "What is your name?"
    await chat.send("Ann")
    too_big = await chat.send("12")
    assert texts(too_big.events) == ["Sorry Ann, at most 8 people."]
    assert too_big.state.status == RunStatus.WAITING_FOR_USER_INPUT
    confirm = await chat.send("4")
    assert confirm.state.status == RunStatus.PAUSED
    assert confirm.state.waiting_for is not None
    assert confirm.state.waiting_for.prompt == "Book for Ann, 4 people?"
    assert confirm.state.waiting_for.kind == "continue"
    done = await chat.send()
    assert done.state.status == RunStatus.COMPLETED
    assert done.state.output == {"name": "Ann", "size": 4}
    assert done.events[-1].type == "run_completed"
    assert done.events[-1].data == {"output": {"name": "Ann", "size": 4}}


async def test_seq_counts_over_the_whole_run_without_gaps() -> None:
    chat = Conversation(BOOKING)
    events = []
    for message in [None, "Ann", "x", "3", None]:
        events += (await chat.send(message)).events
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.turn for e in events if e.type == "run_completed"] == [5]


async def test_every_node_is_wrapped_in_started_and_completed() -> None:
    chat = Conversation(flow(("hello", {"type": "message", "text": "hi", "next": "end"}), END))
    outcome = await chat.send()
    assert [(e.type, e.node_id) for e in outcome.events] == [
        ("run_started", None),
        ("node_started", "hello"),
        ("message", "hello"),
        ("node_completed", "hello"),
        ("node_started", "end"),
        ("node_completed", "end"),
        ("run_completed", "end"),
    ]
    assert outcome.events[1].data == {"node_type": "message"}


async def test_first_turn_message_is_consumed_by_the_first_input_reached() -> None:
    chat = Conversation(BOOKING)
    outcome = await chat.send("Bob")
    assert outcome.state.variables["name"] == "Bob"
    assert outcome.state.waiting_for is not None
    assert outcome.state.waiting_for.node_id == "ask_size"


async def test_input_rejects_and_reasks_with_retry_prompt() -> None:
    chat = Conversation(BOOKING)
    await chat.send("Ann")
    outcome = await chat.send("many")
    assert types(outcome.events) == ["input_rejected", "message", "waiting_for_input"]
    rejected = outcome.events[1]
    assert rejected.data["message"] == "many"
    assert "pattern" in rejected.data["reason"]
    assert texts(outcome.events) == ["Please give a number."]
    assert "size" not in outcome.state.variables


async def test_input_choices_and_max_length() -> None:
    ask = {
        "type": "input",
        "save_as": "colour",
        "validate": {"choices": ["red", "blue"], "max_length": 4},
        "next": "end",
    }
    chat = Conversation(flow(("ask", ask), END))
    waiting = await chat.send()
    assert waiting.state.waiting_for is not None
    assert waiting.state.waiting_for.choices == ["red", "blue"]
    too_long = await chat.send("turquoise")
    assert "at most 4" in too_long.events[1].data["reason"]
    wrong = await chat.send("pink")
    assert "one of: red, blue" in wrong.events[1].data["reason"]
    accepted = await chat.send("blue")
    assert accepted.state.status == RunStatus.COMPLETED
    assert accepted.state.variables["colour"] == "blue"


async def test_input_saves_data_and_history() -> None:
    ask = {
        "type": "input",
        "prompt": "Order?",
        "save_as": "text",
        "save_data_as": "order",
        "next": "end",
    }
    chat = Conversation(flow(("ask", ask), END))
    await chat.send()
    outcome = await chat.send("two pizzas", data={"items": [{"sku": "p1", "qty": 2}]})
    assert outcome.state.variables == {
        "text": "two pizzas",
        "order": {"items": [{"sku": "p1", "qty": 2}]},
    }
    assert [(h.role, h.text) for h in outcome.state.history] == [
        ("assistant", "Order?"),
        ("user", "two pizzas"),
    ]
    assert outcome.events[1].type == "input_received"
    assert outcome.events[1].data == {"message": "two pizzas"}


async def test_a_resume_without_message_waits_again_at_the_same_input() -> None:
    chat = Conversation(BOOKING)
    await chat.send()
    outcome = await chat.send()
    assert types(outcome.events) == ["waiting_for_input"]
    assert [h.text for h in outcome.state.history].count("What is your name?") == 1


async def test_pause_continues_with_or_without_message() -> None:
    pause = {"type": "pause", "prompt": "Ready?", "save_as": "reply", "next": "end"}
    with_message = Conversation(flow(("wait", pause), END))
    first = await with_message.send("ignored: pause does not consume on arrival")
    assert first.state.status == RunStatus.PAUSED
    assert types(first.events) == ["run_started", "paused"]
    done = await with_message.send("yes")
    assert done.state.variables["reply"] == "yes"
    assert done.state.status == RunStatus.COMPLETED

    without = Conversation(flow(("wait", pause), END))
    await without.send()
    done = await without.send()
    assert done.state.variables["reply"] is None
    assert done.state.status == RunStatus.COMPLETED


async def test_switch_takes_the_first_true_case_else_default() -> None:
    switch = {
        "type": "switch",
        "cases": [{"when": "n > 10", "next": "big"}, {"when": "n > 0", "next": "small"}],
        "default": "zero",
    }
    nodes = (
        ("check", switch),
        ("big", {"type": "end", "output": {"size": "'big'"}}),
        ("small", {"type": "end", "output": {"size": "'small'"}}),
        ("zero", {"type": "end", "output": {"size": "'zero'"}}),
    )
    for n, expected in [(50, "big"), (5, "small"), (0, "zero")]:
        outcome = await Conversation(flow(*nodes), variables={"n": n}).send()
        assert outcome.state.output == {"size": expected}


async def test_set_keeps_types_and_sees_earlier_values() -> None:
    values = {"count": "1 + 1", "items": "[count, 'x']", "flag": "count == 2", "ratio": "count / 4"}
    outcome = await Conversation(
        flow(("calc", {"type": "set", "values": values, "next": "end"}), END)
    ).send()
    assert outcome.state.variables == {"count": 2, "items": [2, "x"], "flag": True, "ratio": 0.5}


async def test_show_state_emits_chosen_or_all_variables() -> None:
    nodes = (
        ("some", {"type": "show_state", "keys": ["a", "missing"], "next": "all"}),
        ("all", {"type": "show_state", "next": "end"}),
        END,
    )
    outcome = await Conversation(flow(*nodes), variables={"a": 1, "b": "two"}).send()
    states = [e.data["values"] for e in outcome.events if e.type == "state"]
    assert states == [{"a": 1, "missing": None}, {"a": 1, "b": "two"}]


async def test_fail_node_fails_the_run_with_its_rendered_error() -> None:
    outcome = await Conversation(
        flow(("stop", {"type": "fail", "error": "No luck, {{ who }}."})), variables={"who": "Ann"}
    ).send()
    assert outcome.state.status == RunStatus.FAILED
    assert outcome.state.error == "No luck, Ann."
    assert outcome.events[-1].type == "run_failed"
    assert outcome.events[-1].data == {"error": "No luck, Ann.", "node_id": "stop"}


async def test_runtime_errors_fail_the_run_naming_the_node() -> None:
    cases = {
        "undefined": {"type": "message", "text": "Hi {{ nobody }}", "next": "end"},
        "zero": {"type": "set", "values": {"x": "1 / 0"}, "next": "end"},
        "filter": {
            "type": "switch",
            "cases": [{"when": "'abc' | int(strict) > 1", "next": "end"}],
            "default": "end",
        },
        "internals": {"type": "set", "values": {"x": "''.__class__.__mro__"}, "next": "end"},
        "huge": {"type": "set", "values": {"x": "'a' * 100000000"}, "next": "end"},
    }
    for node_id, node in cases.items():
        outcome = await Conversation(flow((node_id, node), END)).send()
        assert outcome.state.status == RunStatus.FAILED, node_id
        failure = outcome.events[-1]
        assert failure.type == "run_failed"
        assert failure.data["node_id"] == node_id
        assert f"Node '{node_id}' failed" in failure.data["error"]


async def test_undefined_error_names_the_variable() -> None:
    outcome = await Conversation(
        flow(("greet", {"type": "message", "text": "Hi {{ nobody }}", "next": "end"}), END)
    ).send()
    assert "'nobody' is undefined" in (outcome.state.error or "")


async def test_a_loop_without_waiting_is_aborted_at_the_step_limit() -> None:
    nodes = (
        ("a", {"type": "set", "values": {"n": "n + 1"}, "next": "b"}),
        ("b", {"type": "message", "text": "{{ n }}", "next": "a"}),
    )
    chat = Conversation(flow(*nodes, limits={"max_steps_per_turn": 7}), variables={"n": 0})
    outcome = await chat.send()
    assert outcome.state.status == RunStatus.ABORTED_LOOPING_RISK
    last = outcome.events[-1]
    assert last.type == "run_aborted"
    assert last.data["steps"] == 7
    assert len([e for e in outcome.events if e.type == "node_started"]) == 7
    assert outcome.state.error


async def test_history_is_visible_to_templates() -> None:
    nodes = (
        ("ask", {"type": "input", "prompt": "Name?", "save_as": "name", "next": "echo"}),
        (
            "echo",
            {
                "type": "message",
                "text": "{{ history | length }}: {{ history[-1].text }}",
                "next": "end",
            },
        ),
        END,
    )
    chat = Conversation(flow(*nodes))
    await chat.send()
    outcome = await chat.send("Zoe")
    assert texts(outcome.events) == ["2: Zoe"]


async def test_history_keeps_only_the_most_recent_entries() -> None:
    ask = {"type": "input", "prompt": "Again?", "save_as": "x", "next": "ask"}
    chat = Conversation(flow(("ask", ask)), history_limit=3)
    for message in [None, "1", "2", "3"]:
        outcome = await chat.send(message)
    assert [h.text for h in outcome.state.history] == ["Again?", "3", "Again?"]


async def test_llm_node_without_a_provider_fails_the_run_clearly() -> None:
    llm = {"type": "llm", "prompt": "Say hi", "save_as": "reply", "next": "end"}
    outcome = await Conversation(flow(("think", llm), END)).send()
    assert outcome.state.status == RunStatus.FAILED
    assert "LLM provider" in (outcome.state.error or "")


async def test_the_callers_state_is_left_untouched() -> None:
    chat = Conversation(BOOKING)
    await chat.send()
    before = chat.state
    variables_before = dict(before.variables)
    await chat.send("Ann")
    assert before.variables == variables_before
    assert before.status == RunStatus.WAITING_FOR_USER_INPUT


async def test_plain_text_renders_as_jinja_would() -> None:
    text = "Line one\r\nline two } and { braces\n"
    outcome = await Conversation(
        flow(("say", {"type": "message", "text": text, "next": "end"}), END)
    ).send()
    assert texts(outcome.events) == ["Line one\nline two } and { braces\n"]


class RecordingLlm:
    """An LLM client that answers from a script and keeps every call it got."""

    default_model = "scripted"

    def __init__(self, *replies: str, error: str | None = None) -> None:
        self.replies = list(replies)
        self.error = error
        self.calls: list[LlmCall] = []

    async def complete(self, call: LlmCall, on_delta: Callable[[str], None]) -> LlmReply:
        self.calls.append(call)
        if self.error is not None:
            raise LlmError(self.error)
        text = self.replies.pop(0)
        on_delta(text)
        return LlmReply(text=text, usage={"total_tokens": 3})


CHAT = flow(
    ("ask", {"type": "input", "prompt": "Question?", "save_as": "q", "next": "think"}),
    (
        "think",
        {
            "type": "llm",
            "system": "Be brief, {{ who }}.",
            "prompt": "Q: {{ q }}",
            "history": True,
            "model": "big",
            "temperature": 0.5,
            "max_tokens": 20,
            "save_as": "a",
            "next": "ask",
        },
    ),
)


async def test_llm_node_sends_system_history_and_prompt_and_shows_the_reply() -> None:
    llm = RecordingLlm("Paris.")
    chat = Conversation(CHAT, variables={"who": "bot"}, llm=llm)
    await chat.send()
    outcome = await chat.send("Capital of France?")
    call = llm.calls[0]
    assert call.model == "big" and call.temperature == 0.5 and call.max_tokens == 20
    assert [(m.role, m.content) for m in call.messages] == [
        ("system", "Be brief, bot."),
        ("assistant", "Question?"),
        ("user", "Capital of France?"),
        ("user", "Q: Capital of France?"),
    ]
    assert types(outcome.events) == [
        "input_received",
        "llm_started",
        "llm_completed",
        "message",
        "waiting_for_input",
    ]
    started, completed = (e for e in outcome.events if e.type.startswith("llm_"))
    assert started.data == {"model": "big"}
    assert completed.data == {"text": "Paris.", "usage": {"total_tokens": 3}}
    assert outcome.state.variables["a"] == "Paris."
    assert outcome.state.history[-2].text == "Paris."


async def test_llm_node_with_show_false_keeps_the_reply_private() -> None:
    node = {"type": "llm", "prompt": "hi", "show": False, "save_as": "a", "next": "end"}
    llm = RecordingLlm("secret")
    outcome = await Conversation(flow(("think", node), END), llm=llm).send()
    assert "message" not in types(outcome.events)
    assert llm.calls[0].model == "scripted"  # the provider's default
    assert outcome.state.variables["a"] == "secret" and outcome.state.history == []


async def test_a_provider_failure_fails_the_run_naming_the_node() -> None:
    llm = RecordingLlm(error="the provider answered 401: bad key")
    node = {"type": "llm", "prompt": "hi", "save_as": "a", "next": "end"}
    outcome = await Conversation(flow(("think", node), END), llm=llm).send()
    assert outcome.state.status == RunStatus.FAILED
    assert outcome.events[-1].type == "run_failed"
    assert outcome.events[-1].data["node_id"] == "think"
    assert "401: bad key" in outcome.events[-1].data["error"]


def choosing(**validate: Any) -> dict[str, Any]:
    return flow(
        ("ask", {"type": "input", "save_as": "size", "next": "route", "validate": validate}),
        (
            "route",
            {
                "type": "switch",
                "cases": [{"when": "size == 'large'", "next": "big"}],
                "default": "small",
            },
        ),
        ("big", {"type": "end", "output": {"size": "size", "route": "'big'"}}),
        ("small", {"type": "end", "output": {"size": "size", "route": "'small'"}}),
    )


async def test_a_choice_is_stored_as_the_definition_writes_it() -> None:
    chat = Conversation(choosing(choices=["small", "large"]))
    await chat.send()
    outcome = await chat.send("  large ")
    assert outcome.state.output == {"size": "large", "route": "big"}
    received = [e for e in outcome.events if e.type == "input_received"]
    assert received[0].data == {"message": "  large "}  # what the user sent, as sent


async def test_choices_are_case_sensitive_unless_told_otherwise() -> None:
    strict = Conversation(choosing(choices=["small", "large"]))
    await strict.send()
    rejected = await strict.send("LARGE")
    assert [e.type for e in rejected.events if e.type.startswith("input")] == ["input_rejected"]
    relaxed = Conversation(choosing(choices=["small", "large"], ignore_case=True))
    await relaxed.send()
    outcome = await relaxed.send(" Large")
    assert outcome.state.output == {"size": "large", "route": "big"}


async def test_ignore_case_applies_to_the_pattern_too() -> None:
    chat = Conversation(choosing(pattern="^(small|large)$", ignore_case=True))
    await chat.send()
    outcome = await chat.send("LARGE")
    assert outcome.state.status == RunStatus.COMPLETED
    assert outcome.state.output == {"size": "LARGE", "route": "small"}


async def test_support_triage_routes_a_choice_with_spaces_around_it() -> None:
    spec = json.loads(resources.files("app.examples").joinpath("support_triage.json").read_text())
    chat = Conversation(spec["definition"])
    await chat.send()
    await chat.send("  Bug ")
    await chat.send("3")
    outcome = await chat.send("It crashes.")
    assert outcome.state.variables["area"] == "bug"
    assert outcome.state.variables["priority"] == "high"
