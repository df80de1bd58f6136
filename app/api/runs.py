"""Turns (``POST /v1/workflows/{id}/execute``) and runs (``/v1/runs``): listing, reading,
following and cancelling them."""

import re
from datetime import datetime
from typing import Annotated, Any

from bson import ObjectId
from litestar import Controller, MediaType, Response, delete, get, post, route
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import HeaderParameter, JSONBody
from litestar.response import ServerSentEvent
from litestar.response.base import ASGIResponse
from litestar.serialization import encode_json, get_serializer

from app.api.answers import run_detail, run_summary, turn_accepted, turn_answer
from app.api.dependencies import API_KEY_SECURITY, Caller, run_services
from app.api.errors import error_responses
from app.api.idempotency import AnswerMode, execute_once
from app.api.openapi import EXECUTION_SOURCE_PATTERN, StreamOperation, TurnOperation
from app.api.params import (
    DEFAULT_LIMIT,
    CreatedAfterQuery,
    CreatedBeforeQuery,
    CursorQuery,
    IdPath,
    JsonBodyRequest,
    LimitQuery,
    RunStatusQuery,
    TurnQuery,
    VersionQuery,
    WorkflowIdQuery,
    moment,
    object_id,
    turn_request,
)
from app.api.schemas import (
    CancelAnswer,
    ExecuteRequest,
    RunDetail,
    RunEvents,
    RunPage,
    TurnAccepted,
    TurnAnswer,
)
from app.api.streaming import position_after, stream_run, stream_turn
from app.errors import ErrorItem, InvalidParameter
from app.services.listing import PageOfRuns
from app.services.run_services import RunServices
from app.services.turn_model import DEFAULT_SOURCE

Runs = NamedDependency[RunServices]
LastEventIdHeader = Annotated[
    str,
    HeaderParameter(
        name="Last-Event-ID",
        description=(
            "Resume after this message: a seq, or `<seq>.<characters>` (LLM text); without"
            " it, the stream starts at the run's first event."
        ),
        schema_extra={"pattern": "^[0-9]{1,18}([.][0-9]{1,18})?$"},
    ),
]
_SOURCE = re.compile(EXECUTION_SOURCE_PATTERN)

_CANCEL_ERRORS = error_responses(
    "invalid_id", "unauthorized", "not_found", "turn_in_progress", "run_terminal"
)


class ExecuteController(Controller):
    request_class = JsonBodyRequest
    path = "/v1/workflows/{workflow_id:str}/execute"
    tags = ["runs"]
    security = API_KEY_SECURITY

    @post(
        "/",
        status_code=200,
        summary="Post one turn: start a run, answer it, or stop it",
        description=(
            "Every field of the body is optional, and so is the body: an empty POST starts a"
            " run. With `Accept: text/event-stream` the turn streams as Server-Sent Events:"
            " each event (`event:` its type, `id:` its seq), `llm_delta` messages while LLM"
            " text is generated, and `turn_result` last with this answer. With `Prefer:"
            " respond-async` it answers `202` once the run is claimed (refusals still come"
            " first) and executes the turn in the background: poll `status_url`, follow"
            " `stream_url`. A stop is never deferred: it answers `200`. With an"
            " `Idempotency-Key`, a retry of the same request gets the first answer again and"
            " executes nothing (see the header)."
        ),
        responses={
            **error_responses(
                "invalid_json",
                "validation_error",
                "invalid_id",
                "invalid_input",
                "message_too_large",
                "unknown_command",
                "bad_request",
                "unauthorized",
                "not_found",
                "turn_in_progress",
                "run_terminal",
                "request_in_progress",
                "payload_too_large",
                "invalid_definition",
                "idempotency_key_reused",
            ),
            202: ResponseSpec(
                TurnAccepted,
                description="With `Prefer: respond-async`: the turn executes in the background.",
            ),
        },
        operation_class=TurnOperation,
    )
    async def execute(
        self,
        request: Caller,
        workflow_id: IdPath,
        data: JSONBody[ExecuteRequest | None] = None,
        version: VersionQuery = None,
    ) -> Response[TurnAnswer]:  # or 202 TurnAccepted, documented in `responses`
        # The services and the headers are read here rather than declared as a dependency
        # and header parameters, which cost Litestar a tenth of its time per turn; the
        # headers are documented by TurnOperation.
        runs = run_services(request)
        headers = request.headers
        prefer = headers.get("prefer", "")
        source = headers.get("x-execution-source", "")
        workflow = object_id(workflow_id, "workflow_id")
        turn = turn_request(data, version, _execution_source(source))
        streamed = "text/event-stream" in headers.get("accept", "")
        key = headers.get("idempotency-key")
        if key is not None:
            mode: AnswerMode = (
                "stream" if streamed else "async" if prefer and _prefers_async(prefer) else "json"
            )
            return await execute_once(runs, request, workflow, turn, mode, key)
        in_background = streamed or bool(prefer and _prefers_async(prefer))
        prepared = await runs.executor.prepare(
            request.user, workflow, turn, blocking=not in_background
        )
        if streamed:
            # Errors found so far were answered as JSON; from here on the turn streams.
            return ServerSentEvent(stream_turn(runs, prepared))  # type: ignore[return-value]
        if in_background and prepared.done is None:
            runs.executor.start(prepared)
            accepted = turn_accepted(request, prepared)
            answer: Any = Response(
                accepted,
                status_code=202,
                headers={"Location": accepted.status_url, "Preference-Applied": "respond-async"},
            )
            return answer  # type: ignore[no-any-return]
        answer = turn_answer(await runs.executor.complete(prepared))
        serializer = get_serializer(request.route_handler.resolve_type_encoders())
        return _EncodedAnswer(encode_json(answer, serializer))  # type: ignore[return-value]


class _EncodedAnswer:
    """A turn's JSON answer, encoded here as Litestar encodes a Response's content (with
    the layers' type encoders).

    Litestar hands what a handler returns to its ``to_asgi_response``, with what the
    handler's and the app's layers add (headers, cookies, a background task). A Response
    would also merge headers of its own and resolve its encoding on every turn, for an
    answer that needs none of that: this takes the layers' additions as a Response
    would and sends the bytes as they are. An ``after_request`` hook, which is handed
    the Response itself, would not work with it: a test keeps the route without one."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def to_asgi_response(
        self,
        app: Any,
        request: Any,
        *,
        background: Any = None,
        cookies: Any = None,
        headers: dict[str, str] | None = None,
        status_code: int | None = None,
        is_head_response: bool = False,
        **_: Any,
    ) -> ASGIResponse:
        return ASGIResponse(
            body=self._body,
            media_type=MediaType.JSON,
            background=background,
            cookies=cookies,
            headers=headers,
            status_code=status_code or 200,
            is_head_response=is_head_response,
        )


def _prefers_async(prefer: str) -> bool:
    """Whether a ``Prefer`` header (RFC 7240: preferences separated by commas, each maybe
    with parameters after ``;``) holds ``respond-async``."""
    return any(
        part.split(";", 1)[0].strip().lower() == "respond-async" for part in prefer.split(",")
    )


def _execution_source(header: str) -> str:
    if not header:
        return DEFAULT_SOURCE
    if not _SOURCE.fullmatch(header):
        raise InvalidParameter(
            "X-Execution-Source must be a name: a letter, then letters, digits, _ or -, "
            "at most 32 in all.",
            errors=[ErrorItem(path="headers.X-Execution-Source", message="is not a name")],
        )
    return header.upper()


_LISTING_DESCRIPTION = (
    "Newest first, `limit` at a time: pass `next_cursor` as `cursor` for the next page"
    " (null on the last one). Paging is by run id, so a run created meanwhile never makes"
    " a run repeat or go missing. Filters combine; each item is a summary, the run itself"
    " is at `GET /v1/runs/{run_id}`."
)


class RunListController(Controller):
    path = "/v1"
    tags = ["runs"]
    security = API_KEY_SECURITY

    @get(
        "/runs",
        summary="List runs",
        description=_LISTING_DESCRIPTION,
        responses=error_responses("invalid_id", "validation_error", "unauthorized"),
    )
    async def list_runs(
        self,
        request: Caller,
        runs: Runs,
        workflow_id: WorkflowIdQuery = None,
        status: RunStatusQuery = None,
        created_after: CreatedAfterQuery = None,
        created_before: CreatedBeforeQuery = None,
        limit: LimitQuery = DEFAULT_LIMIT,
        cursor: CursorQuery = None,
    ) -> RunPage:
        page = await runs.lister.page(
            request.user,
            limit,
            _cursor(cursor),
            workflow_id=object_id(workflow_id, "workflow_id") if workflow_id is not None else None,
            status=status,
            created_after=_moment(created_after, "created_after"),
            created_before=_moment(created_before, "created_before"),
        )
        return _run_page(page)

    @get(
        "/workflows/{workflow_id:str}/runs",
        summary="List a workflow's runs",
        description=_LISTING_DESCRIPTION,
        responses=error_responses("invalid_id", "validation_error", "unauthorized", "not_found"),
    )
    async def list_workflow_runs(
        self,
        request: Caller,
        runs: Runs,
        workflow_id: IdPath,
        status: RunStatusQuery = None,
        created_after: CreatedAfterQuery = None,
        created_before: CreatedBeforeQuery = None,
        limit: LimitQuery = DEFAULT_LIMIT,
        cursor: CursorQuery = None,
    ) -> RunPage:
        page = await runs.lister.page_of_workflow(
            request.user,
            object_id(workflow_id, "workflow_id"),
            limit,
            _cursor(cursor),
            status=status,
            created_after=_moment(created_after, "created_after"),
            created_before=_moment(created_before, "created_before"),
        )
        return _run_page(page)


def _moment(value: str | None, name: str) -> datetime | None:
    return moment(value, name) if value is not None else None


def _cursor(cursor: str | None) -> ObjectId | None:
    return object_id(cursor, "cursor") if cursor is not None else None


def _run_page(page: PageOfRuns) -> RunPage:
    next_cursor = str(page.next_cursor) if page.next_cursor is not None else None
    return RunPage(items=[run_summary(run) for run in page.runs], next_cursor=next_cursor)


class RunController(Controller):
    path = "/v1/runs/{run_id:str}"
    tags = ["runs"]
    security = API_KEY_SECURITY

    @route("/", http_method="OPTIONS", include_in_schema=False)
    async def allowed_methods(self) -> Response[None]:
        # As in WorkflowController: Litestar 2 lists only the first handler's methods
        # (litestar-org/litestar#4169); this name sorts first so that it is registered first.
        return Response(None, status_code=204, headers={"Allow": "DELETE, GET, OPTIONS"})

    @get(
        "/",
        summary="Read a run",
        responses=error_responses("invalid_id", "unauthorized", "not_found"),
    )
    async def read(self, request: Caller, runs: Runs, run_id: IdPath) -> RunDetail:
        return run_detail(await runs.reader.read(request.user, object_id(run_id, "run_id")))

    @get(
        "/events",
        summary="Read a run's events",
        responses=error_responses("invalid_id", "validation_error", "unauthorized", "not_found"),
    )
    async def events(
        self, request: Caller, runs: Runs, run_id: IdPath, turn: TurnQuery = None
    ) -> RunEvents:
        events = await runs.reader.events(request.user, object_id(run_id, "run_id"), turn)
        return RunEvents(run_id=run_id.lower(), events=events)

    @get(
        "/stream",
        summary="Follow a run's events",
        description=(
            "Server-Sent Events: the run's stored events after `Last-Event-ID` (from the start"
            " without it), then its events live while a turn executes, in this or another"
            " server process, with `llm_delta` messages for LLM text (`id:`"
            " `<seq>.<characters>`). It closes once the run waits for input or has ended;"
            " a comment line every 15 s keeps proxies from closing it. Reconnecting with the"
            " last `id:` received continues exactly, without a gap or a repeat."
        ),
        responses=error_responses("invalid_id", "validation_error", "unauthorized", "not_found"),
        operation_class=StreamOperation,
    )
    async def stream(
        self,
        request: Caller,
        runs: Runs,
        run_id: IdPath,
        last_event_id: LastEventIdHeader = "",
    ) -> ServerSentEvent:
        run = object_id(run_id, "run_id")
        # Read as sent: an empty header is not an absent one (``position_after``).
        position = position_after(request.headers.get("last-event-id"))
        await runs.follower.check(request.user, run)
        return ServerSentEvent(stream_run(runs.follower, request.user, run, position))

    @delete(
        "/",
        status_code=200,
        summary="Cancel a run",
        description="The same as a stop command: see `POST /v1/runs/{run_id}/cancel`.",
        responses=_CANCEL_ERRORS,
    )
    async def delete_run(self, request: Caller, runs: Runs, run_id: IdPath) -> CancelAnswer:
        return await _cancel(runs, request.user, run_id)

    @post(
        "/cancel",
        status_code=200,
        summary="Cancel a run",
        description=(
            "The same as a stop command: the run becomes `cancelled` (a turn of its own, ending"
            " with `run_cancelled`). A turn executing now, in this or another server process,"
            " halts at its next step and stores nothing more; its own answer reports the run"
            " cancelled. A terminal run answers `409 run_terminal`."
        ),
        responses=_CANCEL_ERRORS,
    )
    async def cancel(self, request: Caller, runs: Runs, run_id: IdPath) -> CancelAnswer:
        return await _cancel(runs, request.user, run_id)


async def _cancel(runs: RunServices, tenant: str, run_id: str) -> CancelAnswer:
    result = await runs.canceller.stop(tenant, None, object_id(run_id, "run_id"))
    previous = result.previous_status
    assert previous is not None  # a stop always says what it stopped
    return CancelAnswer(
        run_id=str(result.run.id),
        cancelled=True,
        previous_status=previous,
        message=f"Run {result.run.id} is cancelled; it was {previous}.",
    )
