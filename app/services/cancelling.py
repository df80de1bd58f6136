"""Cancelling a run: the stop command, ``DELETE /v1/runs/{id}`` and ``POST .../cancel``.

A stop writes the run's cancellation over the run as it read it, releasing any claim, if
nothing changed the run in between (else it reads again). A turn executing meanwhile, in
this process or another, loses its claim: its next progress record or its commit does not
match, so it stores nothing more, and its engine is cancelled (here at once). A blocking
turn that had not claimed the run yet (``TurnExecutor``) stores nothing at all: the stop
came first, and the turn is refused as any turn on a cancelled run. The
cancellation is the last event of the turn in flight, after the events that turn had
already stored (and so perhaps shown): nothing shown is replaced.

Round trips: read the run, write the cancellation.
"""

from bson import ObjectId

from app.clock import Clock
from app.engine.state import TERMINAL_STATUSES, RunStatus
from app.errors import NotFound, RunTerminal, TurnInProgress
from app.services.archiving import EventArchiver
from app.services.live import LiveRuns
from app.services.run_cache import RunCache
from app.services.turn_model import (
    TurnResult,
    TurnSettings,
    after_single_event_turn,
    events_of_turn,
    single_event_turn,
)
from app.store.runs import RunStore
from app.telemetry.turns import TurnTelemetry

STOP_ATTEMPTS = 10


class RunCanceller:
    def __init__(
        self,
        runs: RunStore,
        live: LiveRuns,
        archiver: EventArchiver,
        clock: Clock,
        settings: TurnSettings,
        telemetry: TurnTelemetry | None = None,
        cache: RunCache | None = None,
    ) -> None:
        self._telemetry = telemetry or TurnTelemetry()
        self._cache = cache
        self._runs = runs
        self._live = live
        self._archiver = archiver
        self._clock = clock
        self._settings = settings

    async def stop(self, tenant: str, workflow_id: ObjectId | None, run_id: ObjectId) -> TurnResult:
        """Cancel a run (of ``workflow_id``, when given); the result says what it was."""
        for _ in range(STOP_ATTEMPTS):
            now = self._clock()
            run = await self._runs.find(tenant, run_id, now)
            if run is None or (workflow_id is not None and run.workflow_id != workflow_id):
                of_workflow = " of this workflow" if workflow_id is not None else ""
                raise NotFound(f"No run {run_id}{of_workflow}.")
            if run.state.status in TERMINAL_STATUSES:
                raise RunTerminal(f"Run {run_id} is already {run.state.status}.")
            # A turn here may not have claimed the run yet (see ``TurnExecutor``).
            executing = run.claim is not None or self._live.executing(run_id)
            previous = RunStatus.RUNNING if executing else run.state.status
            written = single_event_turn(
                run,
                now,
                RunStatus.CANCELLED,
                ("run_cancelled", None, {}),
                cleanup_after=self._settings.cleanup_after(now),
            )
            assert written.completed_at is not None
            if await self._runs.replace_state(
                run, written.state, written.log, written.completed_at, written.cleanup_after
            ):
                self._live.cancel(run_id)  # a turn of this process: no need to wait for it
                if self._cache is not None:
                    self._cache.drop(run_id)  # it takes no more turns
                done = after_single_event_turn(run, written)
                self._archiver.start(done)
                self._telemetry.run_cancelled(
                    tenant=tenant, run_id=run_id, workflow_id=run.workflow_id, previous=previous
                )
                return TurnResult(
                    run=done,
                    events=events_of_turn(done, written.state.turn),
                    previous_status=previous,
                )
        raise TurnInProgress(f"Run {run_id} kept changing; try the stop again.")
