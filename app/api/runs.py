"""Turns (``POST /v1/workflows/{id}/execute``) and reading runs (``/v1/runs``)."""

from typing import Annotated

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from app.api.dependencies import API_KEY_SECURITY, Caller, error_responses
from app.api.params import object_id, turn_request
from app.api.schemas import ExecuteRequest, RunDetail, RunEvents, TurnAnswer
from app.engine.state import TERMINAL_STATUSES, WAITING_STATUSES, RunStatus
from app.services.turns import TurnResult, TurnService
from app.store.documents import RunDocument

Turns = NamedDependency[TurnService]


class ExecuteController(Controller):
    path = "/v1/workflows/{workflow_id:str}/execute"
    tags = ["runs"]
    security = API_KEY_SECURITY

    @post(
        "/",
        status_code=200,
        summary="Post one turn: start a run, answer it, or stop it",
        responses=error_responses(400, 401, 404, 409, 413),
    )
    async def execute(
        self,
        request: Caller,
        turns: Turns,
        workflow_id: FromPath[str],
        data: JSONBody[ExecuteRequest | None] = None,
        version: Annotated[int | None, QueryParameter(ge=0)] = None,
    ) -> TurnAnswer:
        workflow = object_id(workflow_id, "workflow_id")
        turn = turn_request(data, version)
        return turn_answer(await turns.execute(request.user, workflow, turn))


class RunController(Controller):
    path = "/v1/runs/{run_id:str}"
    tags = ["runs"]
    security = API_KEY_SECURITY

    @get("/", summary="Read a run", responses=error_responses(400, 401, 404))
    async def read(self, request: Caller, turns: Turns, run_id: FromPath[str]) -> RunDetail:
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

    @get("/events", summary="Read a run's events", responses=error_responses(400, 401, 404))
    async def events(
        self,
        request: Caller,
        turns: Turns,
        run_id: FromPath[str],
        turn: Annotated[int | None, QueryParameter(ge=1)] = None,
    ) -> RunEvents:
        events = await turns.events(request.user, object_id(run_id, "run_id"), turn)
        return RunEvents(run_id=run_id.lower(), events=events)


def reported_status(run: RunDocument) -> RunStatus:
    """A run with a turn executing now is ``running``; else the state its last turn left."""
    return RunStatus.RUNNING if run.claim is not None else run.progress.status


def turn_answer(result: TurnResult) -> TurnAnswer:
    run = result.run
    status = reported_status(run)
    return TurnAnswer(
        run_id=str(run.id),
        workflow_id=str(run.workflow_id),
        version=run.version,
        status=status,
        turn=run.progress.turn,
        events=result.events,
        is_waiting_for_input=status in WAITING_STATUSES,
        is_terminal=status in TERMINAL_STATUSES,
        waiting_for=run.progress.waiting_for,
        output=run.progress.output,
        error=run.progress.error,
    )
