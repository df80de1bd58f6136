"""Turns (``POST /v1/workflows/{id}/execute``) and reading runs (``/v1/runs``)."""

from litestar import Controller, Response, delete, get, post, route
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.response import ServerSentEvent

from app.api.answers import reported_status, turn_answer
from app.api.dependencies import API_KEY_SECURITY, Caller
from app.api.errors import error_responses
from app.api.openapi import TurnOperation
from app.api.params import (
    IdPath,
    JsonBodyRequest,
    TurnQuery,
    VersionQuery,
    object_id,
    turn_request,
)
from app.api.schemas import CancelAnswer, ExecuteRequest, RunDetail, RunEvents, TurnAnswer
from app.api.streaming import stream_turn
from app.services.turns import TurnService

Turns = NamedDependency[TurnService]

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
            " text is generated, and `turn_result` last with this answer."
        ),
        responses=error_responses(
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
            "payload_too_large",
            "invalid_definition",
        ),
        operation_class=TurnOperation,
    )
    async def execute(
        self,
        request: Caller,
        turns: Turns,
        workflow_id: IdPath,
        data: JSONBody[ExecuteRequest | None] = None,
        version: VersionQuery = None,
    ) -> Response[TurnAnswer]:
        workflow = object_id(workflow_id, "workflow_id")
        prepared = await turns.prepare(request.user, workflow, turn_request(data, version))
        if "text/event-stream" in request.headers.get("accept", ""):
            # Errors found so far were answered as JSON; from here on the turn streams.
            return ServerSentEvent(stream_turn(turns, prepared))  # type: ignore[return-value]
        return Response(turn_answer(await turns.complete(prepared)))


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
    async def read(self, request: Caller, turns: Turns, run_id: IdPath) -> RunDetail:
        run = await turns.read(request.user, object_id(run_id, "run_id"))
        return RunDetail(
            run_id=str(run.id),
            workflow_id=str(run.workflow_id),
            version=run.version,
            status=reported_status(run),
            turn=run.progress.turn,
            created_at=run.created_at,
            updated_at=run.progress.updated_at,
            waiting_for=run.progress.waiting_for,
            output=run.progress.output,
            error=run.progress.error,
            variables=run.progress.variables,
        )

    @get(
        "/events",
        summary="Read a run's events",
        responses=error_responses("invalid_id", "validation_error", "unauthorized", "not_found"),
    )
    async def events(
        self, request: Caller, turns: Turns, run_id: IdPath, turn: TurnQuery = None
    ) -> RunEvents:
        events = await turns.events(request.user, object_id(run_id, "run_id"), turn)
        return RunEvents(run_id=run_id.lower(), events=events)

    @delete(
        "/",
        status_code=200,
        summary="Cancel a run",
        description="The same as a stop command: see `POST /v1/runs/{run_id}/cancel`.",
        responses=_CANCEL_ERRORS,
    )
    async def delete_run(self, request: Caller, turns: Turns, run_id: IdPath) -> CancelAnswer:
        return await _cancel(turns, request.user, run_id)

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
    async def cancel(self, request: Caller, turns: Turns, run_id: IdPath) -> CancelAnswer:
        return await _cancel(turns, request.user, run_id)


async def _cancel(turns: TurnService, tenant: str, run_id: str) -> CancelAnswer:
    result = await turns.stop(tenant, None, object_id(run_id, "run_id"))
    previous = result.previous_status
    assert previous is not None  # a stop always says what it stopped
    return CancelAnswer(
        run_id=str(result.run.id),
        cancelled=True,
        previous_status=previous,
        message=f"Run {result.run.id} is cancelled; it was {previous}.",
    )
