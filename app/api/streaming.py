"""Server-Sent Events: a turn as it happens (``POST .../execute`` with ``Accept:
text/event-stream``), and a run's stream (``GET /v1/runs/{id}/stream``).

Each event is one message (``event:`` its type, ``id:`` its seq); LLM text is sent as
``llm_delta`` messages ``{"text"}`` whose ``id`` is ``<seq>.<characters>``: the event the
text follows, and how much of the text has been sent with this message. A client that
reconnects with that ``Last-Event-ID`` continues exactly where it was, in the middle of
the text if the call is still generating.
"""

import asyncio
import logging
import re
from collections.abc import AsyncIterator

import msgspec
from bson import ObjectId
from litestar.response import ServerSentEventMessage

from app.api.answers import turn_answer
from app.api.schemas import ErrorBody, TurnAnswer
from app.engine.state import Event, LlmDelta
from app.errors import ErrorItem, InvalidParameter, TandemError
from app.services.following import RunFollower
from app.services.live import LiveTurn, StreamPosition
from app.services.run_services import RunServices
from app.services.turn_model import PreparedTurn, TurnResult

logger = logging.getLogger("tandem")
_LAST_EVENT_ID = re.compile(r"(\d{1,18})(?:\.(\d{1,18}))?")


def stream_turn(runs: RunServices, turn: PreparedTurn) -> AsyncIterator[ServerSentEventMessage]:
    """Start a prepared turn in the background and return its SSE messages. The turn starts
    here, not when the stream is first read: a client that goes away at any moment, even
    before the response begins, ends the stream, never the turn, which completes and is
    stored (and releases its claim)."""
    task, live = runs.executor.start(turn)
    return stream_started_turn(runs, turn, task, live)


def stream_started_turn(
    runs: RunServices,
    turn: PreparedTurn,
    task: "asyncio.Task[TurnResult]",
    live: LiveTurn | None,
) -> AsyncIterator[ServerSentEventMessage]:
    """The SSE messages of a turn already started (``TurnExecutor.start``)."""
    done = turn.done.events if turn.done is not None else None
    first_seq = done[0].seq if done else turn.run.next_seq
    keepalive = runs.follower.keepalive_seconds
    return _turn_messages(task, live, StreamPosition(seq=first_seq - 1), keepalive)


async def stream_answered_turn(answer_json: str) -> AsyncIterator[ServerSentEventMessage]:
    """A turn already answered (``answer_json``: its answer), as its stream ends: each of
    its events, then ``turn_result`` (an Idempotency-Key's replay; LLM text is not stored,
    so no ``llm_delta``: each ``llm_completed`` carries the text whole)."""
    for event in _ANSWER.decode(answer_json).events:
        yield message(event, StreamPosition(seq=event.seq))
    yield ServerSentEventMessage(event="turn_result", data=answer_json)


_ANSWER = msgspec.json.Decoder(TurnAnswer)


async def _turn_messages(
    task: "asyncio.Task[TurnResult]",
    live: LiveTurn | None,
    position: StreamPosition,
    keepalive_seconds: float,
) -> AsyncIterator[ServerSentEventMessage]:
    if live is not None:
        async for item in live.follow(position, keepalive_seconds):
            yield keepalive() if item is None else message(item, position)
    try:
        result = await task
    except TandemError as error:  # the turn lost its run to a recovery elsewhere
        yield _error(ErrorBody(detail=error.detail, code=error.code))
        return
    except Exception:
        logger.exception("a streamed turn failed")
        yield _error(
            ErrorBody(detail="The server failed to finish this turn.", code="internal_error")
        )
        return
    # What the turn stored but had not shown (its last events; a stop's event).
    for event in result.events:
        if position.passed(event, 0) is not None:
            yield message(event, position)
    yield ServerSentEventMessage(event="turn_result", data=_json(turn_answer(result)))


def stream_run(
    follower: RunFollower, tenant: str, run_id: ObjectId, position: StreamPosition
) -> AsyncIterator[ServerSentEventMessage]:
    return _run_messages(follower, tenant, run_id, position)


async def _run_messages(
    follower: RunFollower, tenant: str, run_id: ObjectId, position: StreamPosition
) -> AsyncIterator[ServerSentEventMessage]:
    try:
        async for item in follower.follow(tenant, run_id, position):
            yield keepalive() if item is None else message(item, position)
    except TandemError as error:  # the run went away (another tenant cannot get here)
        yield _error(ErrorBody(detail=error.detail, code=error.code))


def position_after(last_event_id: str | None) -> StreamPosition:
    """Where a stream resumes: after the ``Last-Event-ID`` a client sends back (an
    EventSource sends none before it has seen an id; an empty one is refused, as the
    document's pattern says)."""
    if last_event_id is None:
        return StreamPosition()
    match = _LAST_EVENT_ID.fullmatch(last_event_id.strip())
    if match is None:
        raise InvalidParameter(
            "Last-Event-ID must be the id of a message of this stream: a seq, or "
            "<seq>.<characters> for LLM text.",
            errors=[ErrorItem(path="headers.Last-Event-ID", message="is not an event id")],
        )
    return StreamPosition(seq=int(match.group(1)), text_offset=int(match.group(2) or 0))


def message(item: Event | LlmDelta, position: StreamPosition) -> ServerSentEventMessage:
    """``item`` as an SSE message; ``position`` has already moved past it."""
    if isinstance(item, LlmDelta):
        return ServerSentEventMessage(
            event="llm_delta",
            id=f"{position.seq}.{position.text_offset}",
            data=_json({"text": item.text}),
        )
    return ServerSentEventMessage(event=item.type, id=str(item.seq), data=_json(item))


def keepalive() -> ServerSentEventMessage:
    """A comment line: proxies see traffic and keep the connection open."""
    return ServerSentEventMessage(comment="keepalive", data=None)


def _error(body: ErrorBody) -> ServerSentEventMessage:
    return ServerSentEventMessage(event="error", data=_json(body))


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()
