"""The turn protocol: claim a run, run the engine, commit what it did.

Round trips per turn, whatever the number of nodes executed:
- first turn: read the workflow, insert the run (claimed), commit;
- later turn: claim, archive the previous turn's events, commit;
- stop: read, archive the previous turn's events, write the cancellation;
plus one read of the version when its compiled form is not cached yet.
"""

import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import msgspec
from bson import ObjectId

from app.clock import Clock
from app.engine.compiler import CompiledWorkflow
from app.engine.llm import LlmClient
from app.engine.runner import DEFAULT_HISTORY_LIMIT, TurnOptions, run_turn
from app.engine.state import (
    TERMINAL_STATUSES,
    Event,
    RunStatus,
    TurnInput,
)
from app.errors import (
    BadRequest,
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
STOP_ATTEMPTS = 10


@dataclass(frozen=True, slots=True)
class TurnSettings:
    lease: timedelta = timedelta(seconds=30)
    history_limit: int = DEFAULT_HISTORY_LIMIT
    max_message_bytes: int = 32 * 1024


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
    """The run after the turn, and the events of the turn."""

    run: RunDocument
    events: list[Event]


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
        self._runs = runs
        self._workflows = workflows
        self._clock = clock
        self._settings = settings

    async def execute(self, tenant: str, workflow_id: ObjectId, request: TurnRequest) -> TurnResult:
        if request.stop:
            if request.run_id is None:
                raise BadRequest("A stop needs the run_id of the run to stop.")
            return await self.stop(tenant, workflow_id, request.run_id)
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
                raise NotFound(f"No run {run_id} of this workflow.")
            if run.progress.status in TERMINAL_STATUSES:
                raise RunTerminal(f"Run {run_id} is already {run.progress.status}.")
            await self._runs.archive_events(run)
            now = self._clock()
            turn = run.progress.turn + 1
            event = Event(
                seq=run.progress.seq + 1,
                turn=turn,
                type="run_cancelled",
                node_id=None,
                at=now,
                data={},
            )
            progress = RunProgress(
                status=RunStatus.CANCELLED,
                turn=turn,
                seq=run.progress.seq + 1,
                current_node=run.progress.current_node,
                variables_json=run.progress.variables_json,
                history_json=run.progress.history_json,
                waiting_for=None,
                output_json="null",
                error=None,
                last_events_json=encode_events([event]),
                updated_at=now,
            )
            if await self._runs.replace_progress(run, progress):
                return TurnResult(run=_apply(run, progress, claim=None), events=[event])
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
    ) -> TurnResult:
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
            progress=RunProgress(
                status=RunStatus.NOT_STARTED,
                turn=0,
                seq=0,
                current_node=None,
                variables_json=dump_json(inputs),
                history_json="[]",
                waiting_for=None,
                output_json="null",
                error=None,
                last_events_json="",
                updated_at=now,
            ),
        )
        # Inserted before it runs, so that a stop can reach it and a crash cannot lose it.
        await self._runs.insert(run)
        return await self._run_claimed(run, compiled, claim)

    async def _next_turn(
        self, tenant: str, workflow_id: ObjectId, run_id: ObjectId, turn_input: TurnInput
    ) -> TurnResult:
        for _ in range(CLAIM_ATTEMPTS):
            claim = self._new_claim(turn_input)
            run = await self._runs.claim_for_turn(tenant, run_id, workflow_id, claim)
            if run is not None:
                break
            await self._explain_refused_claim(tenant, workflow_id, run_id)
        else:
            raise TurnInProgress(f"Run {run_id} is executing another turn.")
        await self._runs.archive_events(run)
        compiled = await self._workflows.compiled(tenant, workflow_id, run.version)
        return await self._run_claimed(run, compiled, claim)

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
        compiled = await self._workflows.compiled(tenant, run.workflow_id, run.version)
        await self._run_claimed(run, compiled, run.claim)

    async def _run_claimed(
        self, run: RunDocument, compiled: CompiledWorkflow, claim: Claim
    ) -> TurnResult:
        turn = run.progress.turn + 1
        options = TurnOptions(
            turn=turn,
            first_seq=run.progress.seq + 1,
            workflow_id=str(run.workflow_id),
            version=run.version,
            clock=self._clock,
            history_limit=self._settings.history_limit,
            llm=self._llm,
        )
        turn_input = TurnInput(message=claim.message, data=claim.data)
        outcome = await run_turn(compiled, run.progress.engine_state(), turn_input, options)
        progress = RunProgress.after_turn(
            outcome.state,
            turn=turn,
            seq=run.progress.seq + len(outcome.events),
            events=outcome.events,
            now=self._clock(),
        )
        if await self._runs.commit_turn(run.id, claim.token, progress):
            return TurnResult(run=_apply(run, progress, claim=None), events=outcome.events)
        return await self._answer_after_lost_claim(run, turn)

    async def _answer_after_lost_claim(self, run: RunDocument, turn: int) -> TurnResult:
        """The turn lost its claim to a stop (or, past its lease, to a recovery): nothing it
        did is stored, and its answer is what the run holds now."""
        current = await self._runs.find(run.tenant, run.id)
        assert current is not None
        if current.progress.turn < turn:
            raise TurnInProgress(f"Run {run.id} is executing this turn again elsewhere.")
        return TurnResult(run=current, events=current.progress.last_events())

    def _new_claim(self, turn_input: TurnInput) -> Claim:
        return Claim(
            token=secrets.token_hex(16),
            message=turn_input.message,
            data_json=dump_json(turn_input.data),
            expires_at=self._clock() + self._settings.lease,
        )


def _apply(run: RunDocument, progress: RunProgress, claim: Claim | None) -> RunDocument:
    """The run as it is once ``progress`` is committed."""
    return msgspec.structs.replace(run, progress=progress, claim=claim)
