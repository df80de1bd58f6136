"""Turns (``POST /v1/workflows/{id}/execute``) and reading runs (``/v1/runs``)."""

from litestar import Controller, Response, get, post
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
from app.api.schemas import ExecuteRequest, RunDetail, RunEvents, TurnAnswer
from app.api.streaming import stream_turn
from app.services.turns import TurnService

Turns = NamedDependency[TurnService]


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
