"""How ``chat`` shows a run's events."""

import io
from typing import Any

from app.cli.chat import Transcript
from app.cli.sse import SseMessage


def event(kind: str, node: str | None = None, /, **data: Any) -> SseMessage:
    return SseMessage(kind, "1", {"type": kind, "node_id": node, "data": data})


def test_an_llm_reply_is_shown_as_it_streams_and_not_again_as_its_message() -> None:
    out = io.StringIO()
    transcript = Transcript(out)
    transcript.show_all(
        [
            event("llm_started", "answer", model="echo"),
            SseMessage("llm_delta", "1.5", {"text": "Hello"}),
            SseMessage("llm_delta", "1.11", {"text": " there"}),
            event("llm_completed", "answer", text="Hello there"),
            event("message", "answer", text="Hello there"),
            event("message", "after", text="Next."),
            event(
                "waiting_for_input",
                "ask",
                node_id="ask",
                kind="message",
                prompt="More?",
                choices=["yes", "no"],
            ),
        ]
    )
    assert out.getvalue() == "Hello there\nNext.\nMore?\nChoices: [1] yes  [2] no\n"
    assert transcript.waiting_for is not None and transcript.waiting_for["node_id"] == "ask"
    assert not transcript.ended


def test_the_end_of_a_run() -> None:
    out = io.StringIO()
    transcript = Transcript(out)
    transcript.show_all(
        [
            event("input_rejected", "ask", message="x", reason="must be a number"),
            event("state", "show", values={"a": 1}),
            event("run_failed", "boom", error="division by zero", node_id="boom"),
        ]
    )
    assert out.getvalue() == (
        '(not accepted: must be a number)\nState: {"a": 1}\nRun failed: division by zero\n'
    )
    assert transcript.ended
