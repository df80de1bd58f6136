"""The turn protocol: claim a run, run the engine, commit what it did.

A turn is prepared first (everything that can refuse it: 400, 404, 409) and then
completed, so that a streamed turn can answer its errors as plain JSON before the
stream starts. While the engine runs, a watcher polls the run's claim (after the
first poll interval only, so quick turns cost nothing): a stop, from this process
or another, takes the claim away and the watcher cancels the engine, abandoning an
LLM call in flight; the watcher also renews the lease of a long turn.

Round trips per turn, whatever the number of nodes executed:
- first turn: read the workflow, insert the run (claimed), commit;
- later turn: claim, archive the previous turn's events, commit;
- stop: read, archive the previous turn's events, write the cancellation;
plus one read of the version when its compiled form is not cached yet.
"""

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec
from bson import ObjectId

from app.clock import Clock
from app.engine.budget import EvaluationLimits
from app.engine.compiler import CompiledWorkflow
from app.engine.llm import LlmClient
from app.engine.runner import DEFAULT_HISTORY_LIMIT, TurnOptions, run_turn
from app.engine.state import (
    TERMINAL_STATUSES,
    Event,
    EventType,
    LlmDelta,
    RunStatus,
    TurnInput,
)
from app.errors import (
    BadRequest,
    DefinitionRejected,
    ErrorItem,
    MessageTooLarge,
    NotFound,
    RunTerminal,
    TurnInProgress,
)
from app.services.workflows import WorkflowService
from app.store.documents import Claim, RunDocument, RunProgress, dump_json, encode_events
from app.store.runs import RunStore

CLAIM_ATTEMPTS = 3
# A turn with more events than this has taken milliseconds to encode: it gives the event
# loop away before storing them (the commit and the answer take as long again).
LONG_TURN_EVENTS = 1_000
STOP_ATTEMPTS = 10


@dataclass(frozen=True, slots=True)
class TurnSettings:
    lease: timedelta = timedelta(seconds=30)
    history_limit: int = DEFAULT_HISTORY_LIMIT
    max_message_bytes: int = 32 * 1024
    claim_poll: timedelta = timedelta(milliseconds=250)
    # How many times a turn interrupted by a dying server is executed again before the
    # run fails: a turn that kills its server every time must not be retried forever.
    max_turn_recoveries: int = 2
    # What a run's stored state (variables, history, output) and a turn's events may
    # take, encoded: well under MongoDB's 16 MB a document.
    max_stored_bytes: int = 8 * 1024 * 1024
    evaluation_limits: EvaluationLimits = field(default_factory=EvaluationLimits)


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """A turn as the HTTP layer understood it: ids parsed, sizes and values checked."""

    run_id: ObjectId | None = None
    version: int | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    message: str | None = None
    data: Any = None
    stop: bool = False


@dataclass(frozen=True, slots=True)
class TurnResult:
    """The run after the turn, and the events of the turn; for a stop, the status the run
    had just before it."""

    run: RunDocument
    events: list[Event]
    previous_status: RunStatus | None = None


@dataclass(frozen=True, slots=True)
class PreparedTurn:
    """A turn that nothing can refuse any more: its run claimed, or (a stop) already done."""

    run: RunDocument
    compiled: CompiledWorkflow | None = None
    claim: Claim | None = None
    done: TurnResult | None = None


EventSink = Callable[[Event | LlmDelta], None]
logger = logging.getLogger("tandem")


class TurnService:
    def __init__(
        self,
        runs: RunStore,
        workflows: WorkflowService,
        clock: Clock,
        settings: TurnSettings,
        llm: LlmClient | None = None,
    ) -> None:
        self._llm = llm
        # Engines executing in this process, by run, so that a stop here cancels at once.
        self._in_flight: dict[ObjectId, asyncio.Future[Any]] = {}
        # Turns completing in the background (streamed ones whose client may leave).
        self._background: set[asyncio.Task[TurnResult]] = set()
        self._runs = runs
        self._workflows = workflows
        self._clock = clock
        self._settings = settings

    async def complete(self, turn: PreparedTurn, on_event: EventSink | None = None) -> TurnResult:
        """Run a prepared turn to its end and commit it; ``on_event`` sees it as it happens."""
        if turn.done is not None:
            for event in turn.done.events:
                if on_event is not None:
                    on_event(event)
            return turn.done
        assert turn.compiled is not None and turn.claim is not None
        return await self._run_claimed(turn.run, turn.compiled, turn.claim, on_event)

    def start(self, turn: PreparedTurn, on_event: EventSink) -> "asyncio.Task[TurnResult]":
        """Complete a turn in the background: it finishes and is stored even if nobody
        waits for it any more (a streaming client that disconnects)."""
        task = asyncio.create_task(self.complete(turn, on_event))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def drain(self) -> None:
        """Wait for the turns completing in the background (at shutdown)."""
        if self._background:
            await asyncio.wait(set(self._background))

    async def prepare(
        self, tenant: str, workflow_id: ObjectId, request: TurnRequest
    ) -> PreparedTurn:
        """Everything that can refuse a turn, and its claim; a stop is carried out here."""
        if request.stop:
            if request.run_id is None:
                raise BadRequest("A stop needs the run_id of the run to stop.")
            result = await self.stop(tenant, workflow_id, request.run_id)
            return PreparedTurn(run=result.run, done=result)
        message = request.message
        if message is not None and len(message.encode()) > self._settings.max_message_bytes:
            raise MessageTooLarge(
                f"The message is larger than {self._settings.max_message_bytes} bytes.",
                errors=[ErrorItem(path="run_input.message", message="is too large")],
            )
        turn_input = TurnInput(message=message, data=request.data)
        if request.run_id is None:
            return await self._first_turn(
                tenant, workflow_id, request.version, request.inputs, turn_input
            )
        return await self._next_turn(tenant, workflow_id, request.run_id, turn_input)

    async def stop(self, tenant: str, workflow_id: ObjectId | None, run_id: ObjectId) -> TurnResult:
        """Cancel a run. A turn executing now loses its claim: its commit will not match."""
        for _ in range(STOP_ATTEMPTS):
            run = await self._runs.find(tenant, run_id)
            if run is None or (workflow_id is not None and run.workflow_id != workflow_id):
                of_workflow = " of this workflow" if workflow_id is not None else ""
                raise NotFound(f"No run {run_id}{of_workflow}.")
            if run.progress.status in TERMINAL_STATUSES:
                raise RunTerminal(f"Run {run_id} is already {run.progress.status}.")
            previous = RunStatus.RUNNING if run.claim is not None else run.progress.status
            await self._runs.archive_events(run)
            event, progress = _ended_at_once(
                run, self._clock(), RunStatus.CANCELLED, ("run_cancelled", None, {})
            )
            if await self._runs.replace_progress(run, progress):
                engine = self._in_flight.get(run_id)
                if engine is not None:
                    engine.cancel()  # a turn of this process: no need to wait for its watcher
                return TurnResult(
                    run=_apply(run, progress, claim=None), events=[event], previous_status=previous
                )
        raise TurnInProgress(f"Run {run_id} kept changing; try the stop again.")

    async def read(self, tenant: str, run_id: ObjectId) -> RunDocument:
        """A run as it is now; a turn interrupted by a crash is executed again first."""
        run = await self._runs.find(tenant, run_id)
        if run is None:
            raise NotFound(f"No run {run_id}.")
        if run.claim is not None and run.claim.expires_at <= self._clock():
            await self._recover(tenant, run_id)
            run = await self._runs.find(tenant, run_id)
            assert run is not None
        return run

    async def events(self, tenant: str, run_id: ObjectId, turn: int | None) -> list[Event]:
        """Every event of a run, or of one turn, in order."""
        run = await self.read(tenant, run_id)
        events = await self._runs.archived_events(run, turn)
        last_turn_archived = bool(events) and events[-1].turn == run.progress.turn
        if (turn is None or turn == run.progress.turn) and not last_turn_archived:
            events.extend(run.progress.last_events())
        return events

    async def _first_turn(
        self,
        tenant: str,
        workflow_id: ObjectId,
        version: int | None,
        inputs: dict[str, Any],
        turn_input: TurnInput,
    ) -> PreparedTurn:
        workflow = await self._workflows.get(tenant, workflow_id)
        pinned = workflow.latest_version if version is None else version
        compiled = await self._workflows.compiled(tenant, workflow_id, pinned)
        now = self._clock()
        claim = self._new_claim(turn_input)
        run = RunDocument(
            id=ObjectId(),
            tenant=tenant,
            workflow_id=workflow_id,
            version=pinned,
            revision=0,
            claim=claim,
            created_at=now,
            progress=RunProgress.before_first_turn(inputs, now),
        )
        # Inserted before it runs, so that a stop can reach it and a crash cannot lose it.
        await self._runs.insert(run)
        return PreparedTurn(run=run, compiled=compiled, claim=claim)

    async def _next_turn(
        self, tenant: str, workflow_id: ObjectId, run_id: ObjectId, turn_input: TurnInput
    ) -> PreparedTurn:
        for _ in range(CLAIM_ATTEMPTS):
            claim = self._new_claim(turn_input)
            run = await self._runs.claim_for_turn(tenant, run_id, workflow_id, claim)
            if run is not None:
                break
            await self._explain_refused_claim(tenant, workflow_id, run_id)
        else:
            raise TurnInProgress(f"Run {run_id} is executing another turn.")
        await self._runs.archive_events(run)
        compiled = await self._compiled_or_failed(run, claim)
        if isinstance(compiled, TurnResult):
            return PreparedTurn(run=compiled.run, done=compiled)
        return PreparedTurn(run=run, compiled=compiled, claim=claim)

    async def _explain_refused_claim(
        self, tenant: str, workflow_id: ObjectId, run_id: ObjectId
    ) -> None:
        """Raise the reason a claim was refused; return (to try again) once an interrupted
        turn has been recovered or the run has just become free."""
        run = await self._runs.find(tenant, run_id)
        if run is None or run.workflow_id != workflow_id:
            raise NotFound(f"No run {run_id} of this workflow.")
        if run.progress.status in TERMINAL_STATUSES:
            raise RunTerminal(f"Run {run_id} is {run.progress.status}: it takes no more turns.")
        if run.claim is None:
            return
        if run.claim.expires_at > self._clock():
            raise TurnInProgress(f"Run {run_id} is executing another turn.")
        await self._recover(tenant, run_id)

    async def _recover(self, tenant: str, run_id: ObjectId) -> None:
        """Execute again, with the same input, a turn whose server died before committing."""
        now = self._clock()
        token = secrets.token_hex(16)
        run = await self._runs.take_over_interrupted(
            tenant, run_id, now, token, now + self._settings.lease
        )
        if run is None or run.claim is None:
            return  # someone else recovered it first
        await self._runs.archive_events(run)
        recoveries = run.claim.recoveries
        if recoveries > self._settings.max_turn_recoveries:
            logger.error(
                "run %s: turn %d interrupted %d times; failing the run",
                run_id,
                run.progress.turn + 1,
                recoveries,
            )
            await self._fail_claimed(
                run,
                run.claim,
                f"Turn {run.progress.turn + 1} was interrupted {recoveries} times before it "
                "could finish (its server stopped each time); the run was stopped so that "
                "the turn is not tried again forever.",
            )
            return
        compiled = await self._compiled_or_failed(run, run.claim)
        if not isinstance(compiled, TurnResult):
            await self._run_claimed(run, compiled, run.claim, None)

    async def _compiled_or_failed(
        self, run: RunDocument, claim: Claim
    ) -> CompiledWorkflow | TurnResult:
        """The run's version, compiled; or, if it no longer compiles (published under other
        rules or limits), the run ended ``failed`` with the reason and released."""
        try:
            return await self._workflows.compiled(run.tenant, run.workflow_id, run.version)
        except DefinitionRejected as error:
            return await self._fail_claimed(run, claim, error.detail)

    async def _run_claimed(
        self,
        run: RunDocument,
        compiled: CompiledWorkflow,
        claim: Claim,
        on_event: EventSink | None,
    ) -> TurnResult:
        turn = run.progress.turn + 1
        options = TurnOptions(
            turn=turn,
            first_seq=run.progress.seq + 1,
            workflow_id=str(run.workflow_id),
            version=run.version,
            clock=self._clock,
            history_limit=self._settings.history_limit,
            evaluation_limits=self._settings.evaluation_limits,
            llm=self._llm,
            on_event=on_event,
        )
        turn_input = TurnInput(message=claim.message, data=claim.data)
        engine = asyncio.ensure_future(
            run_turn(compiled, run.progress.engine_state(), turn_input, options)
        )
        self._in_flight[run.id] = engine
        try:
            await self._wait_watching_claim(run.id, claim.token, engine)
        finally:
            if not engine.done():  # our own caller was cancelled: stop the engine too
                engine.cancel()
            if self._in_flight.get(run.id) is engine:
                del self._in_flight[run.id]
        if engine.cancelled():  # a stop took the claim: nothing of this turn is stored
            return await self._answer_after_lost_claim(run, turn)
        try:
            outcome = engine.result()
            progress = RunProgress.after_turn(
                outcome.state,
                turn=turn,
                seq=run.progress.seq + len(outcome.events),
                events=outcome.events,
                now=self._clock(),
            )
            if len(outcome.events) > LONG_TURN_EVENTS:
                await asyncio.sleep(0)  # encoding a long turn took ms: let others go first
            stored = _stored_bytes(progress)
            if stored > self._settings.max_stored_bytes:
                return await self._fail_claimed(
                    run,
                    claim,
                    f"The run's state and this turn's events would take {stored} bytes to "
                    f"store; at most {self._settings.max_stored_bytes} (limit max_stored_bytes).",
                )
            committed = await self._runs.commit_turn(run.id, claim.token, progress)
        except Exception:  # whatever went wrong, the run fails and its claim is released
            logger.exception("run %s: turn %d could not be completed", run.id, turn)
            return await self._fail_claimed(
                run, claim, "The turn could not be completed because of an internal error."
            )
        if committed:
            return TurnResult(run=_apply(run, progress, claim=None), events=outcome.events)
        return await self._answer_after_lost_claim(run, turn)

    async def _fail_claimed(self, run: RunDocument, claim: Claim, error: str) -> TurnResult:
        """End a claimed run ``failed`` with ``error``, as its turn's only event, and release
        the claim; the run keeps the variables and history it had before the turn."""
        node_id = run.progress.current_node
        failure = {"error": error, "node_id": node_id}
        event, progress = _ended_at_once(
            run, self._clock(), RunStatus.FAILED, ("run_failed", node_id, failure), error
        )
        if await self._runs.commit_turn(run.id, claim.token, progress):
            return TurnResult(run=_apply(run, progress, claim=None), events=[event])
        return await self._answer_after_lost_claim(run, progress.turn)

    async def _answer_after_lost_claim(self, run: RunDocument, turn: int) -> TurnResult:
        """The turn lost its claim to a stop (or, past its lease, to a recovery): nothing it
        did is stored, and its answer is what the run holds now."""
        current = await self._runs.find(run.tenant, run.id)
        assert current is not None
        if current.progress.turn < turn:
            raise TurnInProgress(f"Run {run.id} is executing this turn again elsewhere.")
        return TurnResult(run=current, events=current.progress.last_events())

    async def _wait_watching_claim(
        self, run_id: ObjectId, token: str, engine: asyncio.Future[Any]
    ) -> None:
        """Wait for the engine; if it runs longer than one poll interval, watch the claim.
        Returns normally also when the engine was cancelled by a stop (not by our caller)."""
        watchers: list[asyncio.Task[None]] = []

        def start_watching() -> None:
            watchers.append(asyncio.create_task(self._watch_claim(run_id, token, engine)))

        # A timer, not a task: most turns end well within the interval and never need one.
        timer = asyncio.get_running_loop().call_later(
            self._settings.claim_poll.total_seconds(), start_watching
        )
        try:
            await engine
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not engine.cancelled() or (current is not None and current.cancelling()):
                raise
        finally:
            timer.cancel()
            for watcher in watchers:
                watcher.cancel()

    async def _watch_claim(self, run_id: ObjectId, token: str, engine: asyncio.Future[Any]) -> None:
        """Cancel ``engine`` once the run's claim is not this turn's any more (a stop, maybe
        posted to another process); renew the lease of a turn that runs long."""
        lease = self._settings.lease
        with contextlib.suppress(asyncio.CancelledError):
            while not engine.done():
                try:
                    claim = await self._runs.current_claim(run_id)
                except Exception:  # MongoDB unreachable for a moment: the commit will tell
                    logger.warning("could not check the claim of run %s", run_id, exc_info=True)
                    await asyncio.sleep(self._settings.claim_poll.total_seconds())
                    continue
                if claim is None or claim.token != token:
                    engine.cancel()
                    return
                now = self._clock()
                expiring = claim.expires_at - now < lease / 2
                if expiring and not await self._runs.renew_claim(run_id, token, now + lease):
                    engine.cancel()
                    return
                await asyncio.sleep(self._settings.claim_poll.total_seconds())

    def _new_claim(self, turn_input: TurnInput) -> Claim:
        return Claim(
            token=secrets.token_hex(16),
            message=turn_input.message,
            data_json=dump_json(turn_input.data),
            expires_at=self._clock() + self._settings.lease,
        )


def _ended_at_once(
    run: RunDocument,
    now: datetime,
    status: RunStatus,
    event: tuple[EventType, str | None, dict[str, Any]],
    error: str | None = None,
) -> tuple[Event, RunProgress]:
    """The run's next turn, made of one ``(type, node_id, data)`` event and nothing else
    (a stop; a failure of the turn as a whole): the run keeps its variables, history and
    node, and only the turn's outcome changes."""
    event_type, node_id, data = event
    turn = run.progress.turn + 1
    ending = Event(
        seq=run.progress.seq + 1, turn=turn, type=event_type, node_id=node_id, at=now, data=data
    )
    progress = msgspec.structs.replace(
        run.progress,
        status=status,
        turn=turn,
        seq=ending.seq,
        waiting_for=None,
        output_json="null",
        error=error,
        last_events_json=encode_events([ending]),
        updated_at=now,
    )
    return ending, progress


def _stored_bytes(progress: RunProgress) -> int:
    """The UTF-8 size of what a commit writes that grows with the run."""
    parts = (
        progress.variables_json,
        progress.history_json,
        progress.output_json,
        progress.last_events_json,
    )
    return sum(len(part.encode()) for part in parts)


def _apply(run: RunDocument, progress: RunProgress, claim: Claim | None) -> RunDocument:
    """The run as it is once ``progress`` is committed."""
    return msgspec.structs.replace(run, progress=progress, claim=claim)
