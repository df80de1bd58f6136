"""Turns as Server-Sent Events: every event as it happens, LLM text as it is written
(``llm_delta``, sent and never stored), and the turn's full answer last (``turn_result``)."""

import asyncio
import logging
from collections.abc import AsyncIterator

import msgspec
from litestar.response import ServerSentEventMessage

from app.api.answers import turn_answer
from app.api.schemas import ErrorBody
from app.engine.state import Event, LlmDelta
from app.errors import TandemError
from app.services.turns import PreparedTurn, TurnResult, TurnService

logger = logging.getLogger("tandem")


def stream_turn(turns: TurnService, turn: PreparedTurn) -> AsyncIterator[ServerSentEventMessage]:
    """Start a claimed turn in the background and return its SSE messages. The turn starts
    here, not when the stream is first read: a client that goes away at any moment, even
    before the response begins, ends the stream, never the turn, which completes and is
    stored (and releases its claim)."""
    queue: asyncio.Queue[Event | LlmDelta | None] = asyncio.Queue()
    task = turns.start(turn, on_event=queue.put_nowait)
    task.add_done_callback(lambda _: queue.put_nowait(None))
    return _messages(queue, task)


async def _messages(
    queue: "asyncio.Queue[Event | LlmDelta | None]", task: "asyncio.Task[TurnResult]"
) -> AsyncIterator[ServerSentEventMessage]:
    while (item := await queue.get()) is not None:
        if isinstance(item, LlmDelta):
            yield ServerSentEventMessage(event="llm_delta", data=_json({"text": item.text}))
        else:
            yield ServerSentEventMessage(event=item.type, id=str(item.seq), data=_json(item))
    yield _last_message(task)


def _last_message(task: "asyncio.Task[TurnResult]") -> ServerSentEventMessage:
    try:
        return ServerSentEventMessage(event="turn_result", data=_json(turn_answer(task.result())))
    except TandemError as error:  # the turn lost its run to a recovery elsewhere
        body = ErrorBody(detail=error.detail, code=error.code)
    except Exception:
        logger.exception("a streamed turn failed")
        body = ErrorBody(detail="The server failed to finish this turn.", code="internal_error")
    return ServerSentEventMessage(event="error", data=_json(body))


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()
