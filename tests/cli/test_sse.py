"""Server-Sent Events as the command line reads them."""

import pytest

from app.cli.sse import SseMessage, sse_messages


def test_messages_comments_and_data_over_several_lines() -> None:
    lines = [
        ": keepalive",
        "",
        "event: message",
        "id: 3",
        'data: {"text": "hi"}',
        "",
        "event: llm_delta",
        "id: 4.5",
        'data: {"text":',
        'data: "there"}',
        "",
        'data: {"last": true}',
    ]
    assert list(sse_messages(lines)) == [
        SseMessage("message", "3", {"text": "hi"}),
        SseMessage("llm_delta", "4.5", {"text": "there"}),
        SseMessage("message", None, {"last": True}),
    ]


def test_data_that_is_not_json() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        list(sse_messages(["data: {oops", ""]))
