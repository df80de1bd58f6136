"""Building a turn's answer from the run it left."""

from app.api.schemas import TurnAnswer
from app.engine.state import TERMINAL_STATUSES, WAITING_STATUSES, RunStatus
from app.services.turns import TurnResult
from app.store.documents import RunDocument


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
