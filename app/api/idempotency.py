"""``Idempotency-Key`` on ``POST .../execute``: the header, the fingerprint of a keyed
request, and its answers, sent and stored as they are sent, or sent again.

What is decided, and when a key is claimed, linked, stored or released, is the service's
(``app/services/idempotency.py``); this module turns its outcomes into HTTP answers. A
keyed request's own answer is the stored one, byte for byte, so that a replay is exactly
what the first request got (plus ``Idempotent-Replayed: true``).
"""

import hashlib
from typing import Any

import msgspec
from bson import ObjectId
from litestar import Response
from litestar.response import ServerSentEvent

from app.api.answers import accepted_turn, turn_answer
from app.api.dependencies import Caller
from app.api.streaming import stream_answered_turn, stream_started_turn
from app.errors import ErrorItem, InvalidParameter, TandemError
from app.services.idempotency import AnswerMode, KeyAnswered, KeyTurnDone, StoredAnswer
from app.services.run_services import RunServices
from app.services.turn_model import TurnRequest, TurnResult

__all__ = ["AnswerMode", "execute_once", "fingerprint", "idempotency_key"]

MAX_KEY_LENGTH = 255
REPLAYED = {"Idempotent-Replayed": "true"}
_PATH = "headers.Idempotency-Key"


def idempotency_key(header: str) -> str:
    """The key of an ``Idempotency-Key`` header: a structured-field string as the draft
    writes it (``"8e03978e-40d5"``), or the same characters unquoted, as most clients
    send them; either way 1 to 255 printable ASCII characters. Else a 400 naming it."""
    value = header.strip(" \t")
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = _unquoted(value[1:-1])
    if not value:
        raise _bad_key("Idempotency-Key must not be empty.", "is empty")
    if len(value) > MAX_KEY_LENGTH:
        raise _bad_key(
            f"Idempotency-Key must be at most {MAX_KEY_LENGTH} characters, not {len(value)}.",
            f"is longer than {MAX_KEY_LENGTH} characters",
        )
    if not value.isascii() or not value.isprintable():
        raise _bad_key(
            "Idempotency-Key must be printable ASCII characters.",
            "holds characters other than printable ASCII",
        )
    return value


def _unquoted(inner: str) -> str:
    """The characters of a structured-field string (RFC 8941): ``\\"`` and ``\\\\`` are
    its only escapes, and a bare ``"`` cannot appear in it."""
    characters: list[str] = []
    escaped = False
    for character in inner:
        if escaped:
            if character not in '"\\':
                raise _bad_key("Idempotency-Key is a badly quoted string.", "is badly quoted")
            characters.append(character)
            escaped = False
        elif character == "\\":
            escaped = True
        elif character == '"':
            raise _bad_key("Idempotency-Key is a badly quoted string.", "is badly quoted")
        else:
            characters.append(character)
    if escaped:
        raise _bad_key("Idempotency-Key is a badly quoted string.", "is badly quoted")
    return "".join(characters)


def _bad_key(detail: str, message: str) -> InvalidParameter:
    return InvalidParameter(detail, errors=[ErrorItem(path=_PATH, message=message)])


def fingerprint(workflow_id: ObjectId, turn: TurnRequest, mode: AnswerMode) -> str:
    """What makes two requests the same one: the method and path (the workflow), the
    version asked for, the body as understood (so that spacing, the order of keys and
    the case of ids do not count), who starts the run (``X-Execution-Source``), and how
    the answer is asked for (``Accept: text/event-stream``, ``Prefer: respond-async``)."""
    request = {
        "method": "POST",
        "path": f"/v1/workflows/{workflow_id}/execute",
        "version": turn.version,
        "run_id": str(turn.run_id) if turn.run_id is not None else None,
        "inputs": turn.inputs,
        "message": turn.message,
        "data": turn.data,
        "stop": turn.stop,
        "source": turn.source,
        "answer": mode,
    }
    return hashlib.sha256(msgspec.json.encode(request, order="sorted")).hexdigest()


async def execute_once(
    runs: RunServices,
    request: Caller,
    workflow_id: ObjectId,
    turn: TurnRequest,
    mode: AnswerMode,
    header: str,
) -> Response[Any]:
    """A turn posted with an Idempotency-Key: executed once, whatever the retries."""
    key = idempotency_key(header)
    outcome = await runs.keys.begin(
        request.user, key, fingerprint(workflow_id, turn, mode), mode, turn
    )
    if isinstance(outcome, KeyAnswered):
        return _sent(outcome.record.mode, outcome.answer, replayed=True)
    if isinstance(outcome, KeyTurnDone):
        record = outcome.record
        if outcome.result is None:
            answer = _accepted(request, record.run_id, outcome.turn)
        else:
            answer = _answer(outcome.result)
        await runs.keys.store(record, outcome.turn, answer)
        return _sent(record.mode, answer, replayed=True)

    record = outcome.record
    try:
        prepared = await runs.executor.prepare(request.user, workflow_id, outcome.turn)
    except TandemError:  # refused before anything changed: the key is not spent
        await runs.keys.release(record)
        raise
    if prepared.done is not None:  # a stop (or a run failed by its version): done already
        answer = _answer(prepared.done)
        await runs.keys.store(record, prepared.turn, answer)
        return _sent(mode, answer)
    if mode == "async":
        answer = _accepted(request, prepared.run.id, prepared.turn)
        await runs.keys.accept(record, prepared.turn, answer)  # with its turn, before it runs
        runs.executor.start(prepared)
        return _sent(mode, answer)
    await runs.keys.link(outcome, prepared.turn)
    if mode == "stream":
        task, live = runs.executor.start(prepared)
        runs.keys.store_when_done(record, prepared.turn, task, _answer)
        return ServerSentEvent(stream_started_turn(runs, prepared, task, live))
    answer = _answer(await runs.executor.complete(prepared))
    await runs.keys.store(record, prepared.turn, answer)
    return _sent(mode, answer)


def _answer(result: TurnResult) -> StoredAnswer:
    """A turn's answer as it is sent (a streamed turn's is its ``turn_result``)."""
    return StoredAnswer(
        status_code=200, headers={}, body_json=msgspec.json.encode(turn_answer(result)).decode()
    )


def _accepted(request: Caller, run_id: ObjectId, turn: int) -> StoredAnswer:
    """The ``202`` of an asynchronous turn, with its ``Location``."""
    accepted = accepted_turn(request, run_id, turn)
    return StoredAnswer(
        status_code=202,
        headers={"Location": accepted.status_url, "Preference-Applied": "respond-async"},
        body_json=msgspec.json.encode(accepted).decode(),
    )


def _sent(mode: AnswerMode, answer: StoredAnswer, *, replayed: bool = False) -> Response[Any]:
    headers = {**answer.headers, **REPLAYED} if replayed else answer.headers
    if mode == "stream" and answer.status_code == 200:
        return ServerSentEvent(stream_answered_turn(answer.body_json), headers=headers)
    return Response(
        answer.body_json.encode(),
        status_code=answer.status_code,
        headers=headers,
        media_type="application/json",
    )
