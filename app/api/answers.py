"""Building answers from runs: a turn's, a run's status, a listing's summary of a run, an
accepted asynchronous turn."""

from typing import Any

from bson import ObjectId
from litestar import Request

from app.api.schemas import RunDetail, RunSummary, TurnAccepted, TurnAnswer
from app.engine.state import TERMINAL_STATUSES, WAITING_STATUSES, RunStatus
from app.services.turn_model import PreparedTurn, TurnResult
from app.store.documents import RunDocument, RunSummaryDocument


def reported_status(run: RunDocument | RunSummaryDocument) -> RunStatus:
    """A run with a turn executing now is ``running``; else the state its last turn left."""
    return RunStatus.RUNNING if run.claim is not None else run.state.status


def turn_answer(result: TurnResult) -> TurnAnswer:
    run = result.run
    status = reported_status(run)
    return TurnAnswer(
        run_id=str(run.id),
        workflow_id=str(run.workflow_id),
        version=run.version,
        status=status,
        turn=run.state.turn,
        events=result.events,
        is_waiting_for_input=status in WAITING_STATUSES,
        is_terminal=status in TERMINAL_STATUSES,
        waiting_for=run.state.waiting_for,
        output=run.state.output,
        error=run.state.error,
    )


def run_detail(run: RunDocument) -> RunDetail:
    claim = run.claim
    status = reported_status(run)
    completed_nodes = _completed_nodes(run)
    return RunDetail(
        run_id=str(run.id),
        workflow_id=str(run.workflow_id),
        version=run.version,
        status=status,
        turn=run.state.turn,
        created_at=run.created_at,
        updated_at=run.state.updated_at,
        waiting_for=run.state.waiting_for,
        output=run.state.output,
        error=run.state.error,
        variables=run.state.variables,
        progress=_progress(status, completed_nodes, run.total_nodes),
        current_node=claim.current_node if claim is not None else run.state.current_node,
        completed_nodes=completed_nodes,
        total_nodes=run.total_nodes,
        started_at=run.created_at,
        completed_at=run.completed_at,
        cleanup_after=run.cleanup_after,
        execution_source=run.execution_source,
        retry_count=run.retry_count,
    )


def run_summary(run: RunSummaryDocument) -> RunSummary:
    """A run as a listing shows it: the same status, progress and node as its detail."""
    claim = run.claim
    status = reported_status(run)
    return RunSummary(
        run_id=str(run.id),
        workflow_id=str(run.workflow_id),
        version=run.version,
        status=status,
        turn=run.state.turn,
        progress=_progress(status, _completed_nodes(run), run.total_nodes),
        current_node=claim.current_node if claim is not None else run.state.current_node,
        execution_source=run.execution_source,
        created_at=run.created_at,
        updated_at=run.state.updated_at,
        completed_at=run.completed_at,
        cleanup_after=run.cleanup_after,
    )


def _completed_nodes(run: RunDocument | RunSummaryDocument) -> int:
    """How many nodes the run has executed at least once, the executing turn's included."""
    claim = run.claim
    visited = claim.visited_nodes if claim is not None and claim.visited_nodes else None
    return len(visited if visited is not None else run.visited_nodes)


def _progress(status: RunStatus, completed_nodes: int, total_nodes: int) -> int:
    """100 once the run has ended; before, the share of its nodes executed at least once,
    at most 99: a loop cannot make it move backwards or reach 100 early, and a branch not
    taken only means the last step is bigger."""
    if status in TERMINAL_STATUSES:
        return 100
    if total_nodes == 0:
        return 0
    return min(99, completed_nodes * 100 // total_nodes)


def turn_accepted(request: Request[str, Any, Any], turn: PreparedTurn) -> TurnAccepted:
    return accepted_turn(request, turn.run.id, turn.turn)


def accepted_turn(request: Request[str, Any, Any], run_id: ObjectId, turn: int) -> TurnAccepted:
    """The ``202`` of turn ``turn`` of run ``run_id``, executing in the background."""
    run_url = f"{str(request.base_url).rstrip('/')}/v1/runs/{run_id}"
    return TurnAccepted(
        run_id=str(run_id),
        turn=turn,
        status=RunStatus.RUNNING,
        status_url=run_url,
        stream_url=f"{run_url}/stream",
        cancel_url=f"{run_url}/cancel",
    )
