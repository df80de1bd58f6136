"""Executing a turn: claim the run, run the engine, record its progress, commit.

A turn is prepared first (everything that can refuse it: 400, 404, 409) and then
completed, in the request (a blocking turn) or in the background (a streamed or an
asynchronous one), so that refusals answer as plain JSON before any stream or ``202``.

While the engine runs, the turn's progress is recorded in the run document every poll
interval, after the first one only (so a quick turn costs no extra call): the events it
has emitted, the node it is at, its LLM text so far; each record also renews the lease,
and tells the turn whether it still holds its claim: a stop, from this process or
another, takes the claim away and the turn's engine is cancelled (an LLM call in flight
is abandoned). A turn watched by a stream here also records its progress as soon as an
LLM call starts, so that the text can be shown at once (see ``live``).

A blocking first turn inserts its run only when it ends, already committed: until it
answers nobody knows the run's id, so nothing can look for it, stop it or resume it
(and a crash loses only a turn whose client gets no answer). If it runs longer than
the poll interval, its first progress record inserts the run, claimed, so that it is
listed as running and its lease covers it. A first turn that answers before it ends
(streamed, asynchronous) inserts its run, claimed, before it starts.

A blocking later turn of a run whose last turn this process committed (``RunCache``)
does not claim it either: it executes on the run as this process wrote it, and its
commit is conditional on the run's ``revision`` being still the one written, which
every write to a run increments. Claiming would tell others that a turn executes; a
turn that ends within the poll interval has nobody to tell (its client waits for its
answer, shown nothing before). So, as for a first turn, it claims the run (on the same
condition) at its first progress record, or before its first LLM call, so that a stale
copy never costs a provider call twice. If the run changed meanwhile (a stop, a turn in
another process, an expiry), nothing of the turn was stored or shown: it is executed
again the usual way, from a claim, and so answers as a turn arriving after the change
(``409 run_terminal`` after a stop). A second turn of the run here meanwhile gets
``409 turn_in_progress`` at once, as it would against a claim.

Round trips per turn, whatever the number of nodes executed (plus one read of the
version when its compiled form is not cached yet, and a first turn's read of the
workflow's latest version when this process has not read it lately, see
``app.services.latest_versions``):
- blocking first turn: insert the run;
- streamed or asynchronous first turn: insert the run (claimed), commit;
- blocking later turn, the run cached here: commit (conditional); if the run changed
  meanwhile, then as a later turn;
- later turn: claim, commit; archiving its events follows, off the critical path;
- a turn longer than the poll interval: one progress record per interval, and one per
  LLM call when a stream here watches it.
"""

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import msgspec
from bson import ObjectId

from app.clock import Clock
from app.engine.compiler import CompiledWorkflow
from app.engine.llm import LlmCall, LlmClient, LlmReply
from app.engine.runner import TurnOptions, run_turn
from app.engine.state import (
    TERMINAL_STATUSES,
    WAITING_STATUSES,
    Event,
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
from app.services.archiving import EventArchiver
from app.services.cancelling import RunCanceller
from app.services.live import LiveRuns, LiveTurn
from app.services.run_cache import RunCache
from app.services.turn_model import (
    PreparedTurn,
    TurnRequest,
    TurnResult,
    TurnSettings,
    after_single_event_turn,
    events_of_turn,
    run_id_at,
    single_event_turn,
)
from app.services.workflows import WorkflowService
from app.store.documents import (
    Claim,
    CommittedState,
    LiveText,
    RequestRef,
    RunDocument,
    encode_log,
    largest_variable,
    stored_state_bytes,
)
from app.store.idempotency import IdempotencyStore
from app.store.runs import RunStore
from app.telemetry.turns import TurnTelemetry

CLAIM_ATTEMPTS = 3
# A turn with more events than this has taken milliseconds to encode: it gives the event
# loop away before storing them (the commit and the answer take as long again).
LONG_TURN_EVENTS = 1_000
logger = logging.getLogger("tandem")


class TurnExecutor:
    def __init__(
        self,
        runs: RunStore,
        workflows: WorkflowService,
        live: LiveRuns,
        archiver: EventArchiver,
        canceller: RunCanceller,
        clock: Clock,
        settings: TurnSettings,
        llm: LlmClient | None = None,
        keys: IdempotencyStore | None = None,
        telemetry: TurnTelemetry | None = None,
        cache: RunCache | None = None,
    ) -> None:
        self._telemetry = telemetry or TurnTelemetry()
        self._cache = cache
        self._runs = runs
        self._workflows = workflows
        self._live = live
        self._archiver = archiver
        self._canceller = canceller
        self._clock = clock
        self._settings = settings
        self._llm = llm
        self._keys = keys
        # Turns completing in the background (streamed and asynchronous ones).
        self._background: set[asyncio.Task[TurnResult]] = set()

    async def prepare(
        self, tenant: str, workflow_id: ObjectId, request: TurnRequest, *, blocking: bool = False
    ) -> PreparedTurn:
        """Everything that can refuse a turn, and its claim; a stop is carried out here.
        ``blocking``: the turn will be completed in the request (``complete``), so a first
        turn's run need not be stored before it runs (``start`` needs it stored)."""
        if request.stop:
            if request.run_id is None:
                raise BadRequest("A stop needs the run_id of the run to stop.")
            result = await self._canceller.stop(tenant, workflow_id, request.run_id)
            return PreparedTurn(run=result.run, done=result)
        message = request.message
        if message is not None and len(message.encode()) > self._settings.max_message_bytes:
            raise MessageTooLarge(
                f"The message is larger than {self._settings.max_message_bytes} bytes.",
                errors=[ErrorItem(path="run_input.message", message="is too large")],
            )
        turn_input = TurnInput(message=message, data=request.data)
        if request.run_id is None:
            return await self._first_turn(tenant, workflow_id, request, turn_input, blocking)
        if blocking and request.request is None:
            # A keyed turn claims first: a retry must find it if this process dies.
            cached = await self._cached_turn(tenant, workflow_id, request.run_id, turn_input)
            if cached is not None:
                return cached
        return await self._next_turn(
            tenant, workflow_id, request.run_id, turn_input, request.request
        )

    async def complete(self, turn: PreparedTurn) -> TurnResult:
        """Run a prepared turn to its end and commit it. A turn prepared ``blocking`` must
        be completed at once (nothing awaited in between): until then it holds its run
        here."""
        if turn.done is not None:
            return turn.done
        return await self._executed(turn)

    def start(self, turn: PreparedTurn) -> "tuple[asyncio.Task[TurnResult], LiveTurn | None]":
        """Complete a turn in the background: it finishes and is stored even if nobody
        waits for it any more (a streaming client that disconnects, an asynchronous
        turn). Its live feed is open before this returns, so no subscriber misses a thing."""
        assert turn.stored, "a turn completed in the background is prepared non-blocking"
        live = self._live.open(turn.run.id) if turn.done is None else None
        task = asyncio.create_task(self._complete_live(turn, live))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task, live

    async def drain(self) -> None:
        """Wait for the turns completing in the background (at shutdown)."""
        if self._background:
            await asyncio.wait(set(self._background))
        await self._archiver.drain()

    async def recover(self, tenant: str, run_id: ObjectId) -> None:
        """Execute again, with the same input, a turn whose server died before committing
        (its lease has expired); nothing if someone else already did. What the interrupted
        attempt stored keeps its seqs: the turn replays it (see ``_run_claimed``)."""
        now = self._clock()
        token = secrets.token_hex(16)
        run = await self._runs.take_over_interrupted(
            tenant, run_id, now, token, now + self._settings.lease
        )
        if run is None or run.claim is None:
            return  # someone else recovered it first
        recoveries = run.claim.recoveries
        turn = run.state.turn + 1
        if run.claim.request is not None and self._keys is not None:
            # The turn answers a keyed request: its record learns which turn before the
            # turn can commit, so that a retry of the request finds this turn rather than
            # executing its message again.
            await self._keys.link(run.claim.request, turn)
        if recoveries > self._settings.max_turn_recoveries:
            logger.error(
                "run %s: turn %d interrupted %d times; failing the run", run_id, turn, recoveries
            )
            await self._fail_claimed(
                run,
                run.claim,
                f"Turn {turn} was interrupted {recoveries} times before it could finish (its "
                "server stopped each time); the run was stopped so that the turn is not "
                "tried again forever.",
            )
            return
        self._telemetry.turn_recovered(
            tenant=tenant, run_id=run_id, turn=turn, recoveries=recoveries
        )
        compiled = await self._compiled_or_failed(run, run.claim)
        if not isinstance(compiled, TurnResult):
            await self._complete_live(
                PreparedTurn(run, compiled, run.claim), self._live.open(run_id)
            )

    async def _complete_live(self, turn: PreparedTurn, live: LiveTurn | None) -> TurnResult:
        try:
            if turn.done is not None:
                return turn.done
            return await self._executed(turn, live)
        finally:
            if live is not None:
                self._live.close(turn.run.id, live)

    async def _executed(self, turn: PreparedTurn, live: LiveTurn | None = None) -> TurnResult:
        """Execute a prepared turn, and tell the operator (a log line, the metrics)."""
        assert turn.compiled is not None and turn.claim is not None
        run = turn.run
        started = time.perf_counter()
        self._telemetry.turn_started(first=run.state.turn == 0 and turn.claim.recoveries == 0)
        result: TurnResult | None = None
        try:
            if turn.claimed:
                result = await self._run_claimed(
                    run, turn.compiled, turn.claim, live, stored=turn.stored
                )
            else:
                result = await self._run_unclaimed(run, turn.compiled, turn.claim)
            return result
        finally:
            failed = None
            if result is not None and result.events and result.events[-1].type == "run_failed":
                failed = result.events[-1].data
            self._telemetry.turn_ended(
                tenant=run.tenant,
                run_id=run.id,
                workflow_id=run.workflow_id,
                turn=run.state.turn + 1,
                status=result.run.state.status if result is not None else None,
                seconds=time.perf_counter() - started,
                failure=failed if isinstance(failed, dict) else None,
            )

    async def _first_turn(
        self,
        tenant: str,
        workflow_id: ObjectId,
        request: TurnRequest,
        turn_input: TurnInput,
        blocking: bool,
    ) -> PreparedTurn:
        # Also the tenant's check when ?version is given: compiled versions are kept by id.
        latest = await self._workflows.latest_version(tenant, workflow_id)
        pinned = latest if request.version is None else request.version
        compiled = await self._workflows.compiled(tenant, workflow_id, pinned)
        now = self._clock()
        claim = self._new_claim(turn_input, request.request)
        run = RunDocument(
            id=request.new_run_id or run_id_at(now),
            tenant=tenant,
            workflow_id=workflow_id,
            version=pinned,
            revision=0,
            created_at=now,
            execution_source=request.source,
            total_nodes=len(compiled.nodes),
            state=CommittedState.before_first_turn(request.inputs, now),
            claim=claim,
            log=[],
            cleanup_after=self._settings.cleanup_after(now),
        )
        # Inserted when it ends, or at its first progress record; but a keyed request's
        # run must be found by a retry if this process dies (see ``idempotency``).
        if blocking and request.request is None:
            return PreparedTurn(run=run, compiled=compiled, claim=claim, stored=False)
        # Its id is shown before it ends: a stop must reach it, a crash must not lose it.
        await self._runs.insert(run)
        return PreparedTurn(run=run, compiled=compiled, claim=claim)

    async def _cached_turn(
        self, tenant: str, workflow_id: ObjectId, run_id: ObjectId, turn_input: TurnInput
    ) -> PreparedTurn | None:
        """The turn prepared on the run as this process last wrote it (see the module's
        docstring), or None if it has no usable copy."""
        if self._cache is None or self._live.executing(run_id):
            return None
        cached = self._cache.peek(run_id)
        if (
            cached is None
            or cached.tenant != tenant
            or cached.workflow_id != workflow_id
            or cached.state.status not in WAITING_STATUSES
            or cached.expired(self._clock())
        ):
            return None
        try:
            compiled = await self._workflows.compiled(tenant, workflow_id, cached.version)
        except DefinitionRejected:
            return None  # the usual way fails the run, and says why
        # Nothing is awaited from here until the turn completes: it holds the run here.
        if self._cache.peek(run_id) is not cached or self._live.executing(run_id):
            return None  # another request here took it meanwhile
        if not self._cache.worth_using():
            return None
        self._cache.drop(run_id)
        self._live.begin_unclaimed(run_id)
        return PreparedTurn(
            run=cached, compiled=compiled, claim=self._new_claim(turn_input), claimed=False
        )

    async def _run_unclaimed(
        self, run: RunDocument, compiled: CompiledWorkflow, claim: Claim
    ) -> TurnResult:
        """Execute a turn on a cached run; if the run changed before the turn could claim
        or commit it, execute it again from a claim, as a turn arriving after the change."""
        try:
            result = await self._run_claimed(run, compiled, claim, claimed=False)
            if self._cache is not None:
                self._cache.used(stale=False)
            return result
        except _RunChanged:
            if self._cache is not None:
                self._cache.used(stale=True)
        finally:
            self._live.end_unclaimed(run.id)
        turn_input = TurnInput(message=claim.message, data=claim.data)
        again = await self._next_turn(run.tenant, run.workflow_id, run.id, turn_input)
        if again.done is not None:
            return again.done
        assert again.compiled is not None and again.claim is not None
        return await self._run_claimed(again.run, again.compiled, again.claim)

    async def _next_turn(
        self,
        tenant: str,
        workflow_id: ObjectId,
        run_id: ObjectId,
        turn_input: TurnInput,
        request: RequestRef | None = None,
    ) -> PreparedTurn:
        if self._live.executing(run_id):  # a turn here: its claim may be yet to come
            raise TurnInProgress(f"Run {run_id} is executing another turn.")
        for _ in range(CLAIM_ATTEMPTS):
            claim = self._new_claim(turn_input, request)
            run = await self._runs.claim_for_turn(
                tenant,
                run_id,
                workflow_id,
                claim,
                cleanup_after=self._settings.cleanup_after(claim.started_at),
            )
            if run is not None:
                break
            await self._explain_refused_claim(tenant, workflow_id, run_id)
        else:
            raise TurnInProgress(f"Run {run_id} is executing another turn.")
        # The run as stored now: claimed, so one revision on from the one read.
        run = msgspec.structs.replace(run, revision=run.revision + 1)
        if self._cache is not None:
            self._cache.drop(run_id)
        compiled = await self._compiled_or_failed(run, claim)
        if isinstance(compiled, TurnResult):
            return PreparedTurn(run=compiled.run, done=compiled)
        return PreparedTurn(run=run, compiled=compiled, claim=claim)

    async def _explain_refused_claim(
        self, tenant: str, workflow_id: ObjectId, run_id: ObjectId
    ) -> None:
        """Raise the reason a claim was refused; return (to try again) once an interrupted
        turn has been recovered or the run has just become free."""
        run = await self._runs.find(tenant, run_id, self._clock())
        if run is None or run.workflow_id != workflow_id:
            raise NotFound(f"No run {run_id} of this workflow.")
        if run.state.status in TERMINAL_STATUSES:
            raise RunTerminal(f"Run {run_id} is {run.state.status}: it takes no more turns.")
        if run.claim is None:
            return
        if run.claim.expires_at > self._clock():
            raise TurnInProgress(f"Run {run_id} is executing another turn.")
        await self.recover(tenant, run_id)

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
        live: LiveTurn | None = None,
        *,
        stored: bool = True,
        claimed: bool = True,
    ) -> TurnResult:
        """``stored``: whether the run is in the store yet; ``claimed``: whether this turn
        claimed it (see the module's docstring). Raises ``_RunChanged`` if an unclaimed
        turn finds the run changed before it could claim or commit it."""
        turn = run.state.turn + 1
        # Events an interrupted attempt of this turn stored (and so perhaps showed): the
        # turn is executed again from the state before it and replays them, with the LLM
        # replies they hold, rather than storing them a second time under new seqs.
        replayed = [event for event in run.log if event.turn == turn]
        recorder = _TurnRecorder(run, claim, live, replayed, stored, claimed)
        llm = self._llm
        completed_calls = [event for event in replayed if event.type == "llm_completed"]
        if llm is not None and completed_calls:
            llm = _ReplayedLlm(llm, completed_calls)
        if llm is not None and stored and not claimed:
            llm = _ClaimingLlm(llm, lambda: self._claimed(recorder))
        options = TurnOptions(
            turn=turn,
            first_seq=replayed[0].seq if replayed else run.next_seq,
            workflow_id=str(run.workflow_id),
            version=run.version,
            clock=self._clock,
            history_limit=self._settings.history_limit,
            evaluation_limits=self._settings.evaluation_limits,
            llm=llm,
            on_event=recorder.record,
        )
        turn_input = TurnInput(message=claim.message, data=claim.data)
        engine = asyncio.ensure_future(
            run_turn(compiled, run.state.engine_state(), turn_input, options)
        )
        if live is not None:
            live.engine = engine
        unclaimed = self._live.unclaimed(run.id) if not claimed else None
        if unclaimed is not None:
            unclaimed.engine = engine
        try:
            await self._wait_recording(engine, recorder)
        finally:
            if not engine.done():  # our own caller was cancelled: stop the engine too
                engine.cancel()
        if engine.cancelled():  # a stop took the claim: nothing more of this turn is stored
            if not recorder.claimed:
                raise _RunChanged
            return await self._answer_after_lost_claim(run, turn)
        try:
            outcome = engine.result()
            now = self._clock()
            state = CommittedState.after_turn(
                outcome.state, turn=turn, seq=outcome.events[-1].seq, now=now
            )
            archived = self._archiver.archived_through(run.id)
            log = [event for event in run.log if event.turn > archived] + recorder.new_events(
                outcome.events
            )
            if len(outcome.events) > LONG_TURN_EVENTS:
                await asyncio.sleep(0)  # the turn took long: let others go first
            # Measured before the write, so that a run too large to store fails naming the
            # limit rather than with MongoDB's error; the log's text is what is stored.
            log_json = encode_log(log)
            limit = self._settings.max_stored_bytes
            size = stored_state_bytes(state, limit - len(log_json)) + len(log_json)
            if size > limit:
                return await self._fail_claimed(
                    recorder.stored_run(run),
                    claim,
                    _too_large(turn, size, limit, state),
                    node_id=recorder.current_node,
                    recorder=recorder,
                )
            completed_at = now if state.status in TERMINAL_STATUSES else None
            cleanup_after = self._settings.cleanup_after(now)
            done = msgspec.structs.replace(
                run,
                state=state,
                claim=None,
                log=log,
                visited_nodes=recorder.visited_nodes,
                completed_at=completed_at,
                cleanup_after=cleanup_after,
            )
            committed = await self._store_turn(done, claim, recorder, log_json)
        except _RunChanged:
            raise
        except Exception:  # whatever went wrong, the run fails and its claim is released
            logger.exception("run %s: turn %d could not be completed", run.id, turn)
            return await self._fail_claimed(
                recorder.stored_run(run),
                claim,
                "The turn could not be completed because of an internal error.",
                recorder=recorder,
            )
        if not committed:
            return await self._answer_after_lost_claim(run, turn)
        recorder.stored_all()
        done = msgspec.structs.replace(done, revision=recorder.revision)
        self._archiver.start(done)
        if self._cache is not None and state.status in WAITING_STATUSES:
            self._cache.put(done, size)
        return TurnResult(run=done, events=events_of_turn(done, turn))

    async def _store_turn(
        self,
        done: RunDocument,
        claim: Claim,
        recorder: "_TurnRecorder | None" = None,
        log_json: str | None = None,
    ) -> bool:
        """Write a turn's outcome ``done`` as the turn may: insert the run (nobody knows it
        yet), commit it over the claim, or over the revision it was cached at. False if a
        claimed turn lost its claim; ``_RunChanged`` if an unclaimed one finds it changed.
        ``recorder``: None for a turn that claimed its run before it began."""
        if recorder is not None and not recorder.run_stored:
            await self._runs.insert(done)
            return True
        fields: dict[str, Any] = {
            "state": done.state,
            "log": done.log,
            "visited_nodes": done.visited_nodes,
            "completed_at": done.completed_at,
            "cleanup_after": done.cleanup_after,
            "log_json": log_json,
        }
        if recorder is None or recorder.claimed:
            committed = await self._runs.commit_turn(done.id, claim.token, **fields)
        else:
            if recorder.run_expired(self._clock()):
                raise _RunChanged  # gone to every reader: the claim's way answers 404
            try:
                committed = await self._runs.commit_unchanged(done.id, recorder.revision, **fields)
            except Exception:
                # Applied, its answer lost (a connection closed after the write)? Then it is
                # this turn's, and executing the turn again would apply its input twice.
                if not await self._committed_anyway(done, recorder.revision + 1):
                    raise
                committed = True
            if not committed:
                raise _RunChanged
        if committed and recorder is not None:
            recorder.revision += 1
        return committed

    async def _committed_anyway(self, done: RunDocument, revision: int) -> bool:
        """Whether the run is as the conditional commit of ``done`` would have left it (at
        ``revision``, unclaimed, after ``done``'s turn): nobody else writes that."""
        try:
            current = await self._runs.find(done.tenant, done.id, self._clock())
        except Exception:
            return False
        return (
            current is not None
            and current.revision == revision
            and current.claim is None
            and (current.state.turn, current.state.seq, current.state.status)
            == (done.state.turn, done.state.seq, done.state.status)
        )

    async def _fail_claimed(
        self,
        run: RunDocument,
        claim: Claim,
        error: str,
        *,
        node_id: str | None = None,
        recorder: "_TurnRecorder | None" = None,
    ) -> TurnResult:
        """End a claimed run ``failed`` with ``error`` as its turn's last event (naming
        ``node_id``, by default the node the run was at), and release the claim; the run
        keeps the variables and history it had before the turn. ``run.log`` must hold
        every event stored so far: the failure is numbered after them. ``recorder``: the
        turn's, when it executed (it knows how the run is stored, see ``_store_turn``)."""
        node_id = node_id if node_id is not None else run.state.current_node
        failure = {"error": error, "node_id": node_id}
        now = self._clock()
        written = single_event_turn(
            run,
            now,
            RunStatus.FAILED,
            ("run_failed", node_id, failure),
            error,
            cleanup_after=self._settings.cleanup_after(now),
        )
        done = after_single_event_turn(run, written)
        if await self._store_turn(done, claim, recorder):
            self._archiver.start(done)
            return TurnResult(run=done, events=events_of_turn(done, written.state.turn))
        return await self._answer_after_lost_claim(run, written.state.turn)

    async def _answer_after_lost_claim(self, run: RunDocument, turn: int) -> TurnResult:
        """The turn lost its claim to a stop (or, past its lease, to a recovery): nothing
        more of it is stored, and its answer is what the run holds now."""
        current = await self._runs.find(run.tenant, run.id, self._clock())
        if current is None:  # past its cleanup_after while the turn executed (a tiny retention)
            raise NotFound(f"No run {run.id}.")
        if current.state.turn < turn:
            raise TurnInProgress(f"Run {run.id} is executing this turn again elsewhere.")
        return TurnResult(run=current, events=events_of_turn(current, turn))

    async def _wait_recording(
        self, engine: "asyncio.Future[Any]", recorder: "_TurnRecorder"
    ) -> None:
        """Wait for the engine; if it runs longer than one poll interval (or an LLM call
        starts while a stream here watches), record its progress until it ends. Returns
        normally also when the engine was cancelled by a stop (not by our caller)."""
        recording: list[asyncio.Task[None]] = []

        def start_recording() -> None:
            if not recording and not engine.done():
                recording.append(asyncio.create_task(self._record_progress(engine, recorder)))

        # A timer, not a task: most turns end well within the interval and never need one.
        timer = asyncio.get_running_loop().call_later(
            self._settings.claim_poll.total_seconds(), start_recording
        )
        recorder.on_urgent = start_recording
        try:
            await engine
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not engine.cancelled() or (current is not None and current.cancelling()):
                raise
        finally:
            timer.cancel()
            recorder.on_urgent = None
            for task in recording:
                task.cancel()

    async def _record_progress(
        self, engine: "asyncio.Future[Any]", recorder: "_TurnRecorder"
    ) -> None:
        """Store the turn's progress every poll interval (at once when asked), renewing its
        lease; cancel ``engine`` once the turn has lost its claim."""
        interval = self._settings.claim_poll.total_seconds()
        with contextlib.suppress(asyncio.CancelledError):
            while not engine.done():
                recorder.urgent.clear()
                if not await self._store_progress(recorder):
                    engine.cancel()
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(recorder.urgent.wait(), interval)

    async def _claimed(self, recorder: "_TurnRecorder") -> bool:
        """Whether the turn holds its claim, claiming the run now if it has not yet."""
        return recorder.claimed or await self._store_progress(recorder)

    async def _store_progress(self, recorder: "_TurnRecorder") -> bool:
        """Store how far the turn has got, renewing its lease, and claiming (or inserting)
        its run if it has not yet; False if the turn lost its claim, or (not claimed yet)
        the run changed since this process wrote it."""
        async with recorder.lock:
            limit = self._settings.max_stored_bytes
            if recorder.state_bytes is None:
                # What the run's state takes stored (the one before the turn, which the run
                # holds until the commit): the log may take the rest.
                recorder.state_bytes = stored_state_bytes(recorder.state_before, 0)
            events, shown = recorder.unstored()
            log = recorder.log_with(events)
            log_json = encode_log(log)
            live_text = recorder.live_text
            live_bytes = len(live_text.text.encode()) if live_text is not None else 0
            # Too large to store beside the state: the record only renews the lease (the
            # commit measures what it would store, and fails the run if need be).
            too_large = recorder.state_bytes + len(log_json) + live_bytes > limit
            if too_large:
                events, shown = [], 0
            expires_at = self._clock() + self._settings.lease
            try:
                if recorder.claimed:
                    held = await self._runs.record_progress(
                        recorder.run_id,
                        recorder.token,
                        log=None if too_large else log,
                        current_node=recorder.current_node,
                        visited_nodes=recorder.visited_nodes,
                        live_text=None if too_large else live_text,
                        expires_at=expires_at,
                        log_json=None if too_large else log_json,
                    )
                    recorder.revision += held
                elif recorder.run_stored:  # a turn on a cached run: it claims the run now
                    held = await self._claim_cached(
                        recorder,
                        recorder.in_flight_claim(expires_at, with_text=not too_large),
                        None if too_large else log,
                        None if too_large else log_json,
                    )
                elif not too_large:  # a blocking first turn: now its run is stored
                    await self._runs.insert(recorder.in_flight(log, expires_at))
                    recorder.run_stored = recorder.claimed = held = True
                else:  # too large to store: the turn goes on, and the commit fails it
                    return True
            except Exception:  # MongoDB unreachable for a moment: the commit will tell
                logger.warning(
                    "could not record the progress of run %s", recorder.run_id, exc_info=True
                )
                return True
            if held:
                recorder.stored(len(events), shown)
            return held

    async def _claim_cached(
        self,
        recorder: "_TurnRecorder",
        claim: Claim,
        log: list[Event] | None,
        log_json: str | None,
    ) -> bool:
        """Claim the run of a turn on a cached run, storing its progress, if nothing wrote
        the run since this process did; False if something did, or if whether the claim
        was applied cannot be told (the turn is then executed again from a claim: never
        on, say, a provider's call, without a claim)."""
        now = self._clock()
        if recorder.run_expired(now):
            return False
        try:
            held = await self._runs.claim_unchanged(
                recorder.run_id,
                recorder.revision,
                claim,
                log=log,
                cleanup_after=self._settings.cleanup_after(now),
                log_json=log_json,
            )
        except Exception:
            logger.warning("could not claim run %s", recorder.run_id, exc_info=True)
            # Applied, its answer lost? Then the turn holds the claim, and goes on.
            try:
                current = await self._runs.find(recorder.tenant, recorder.run_id, now)
            except Exception:
                return False
            if current is None or current.claim is None or current.claim.token != claim.token:
                return False
            recorder.revision = current.revision
            recorder.claimed = True
            return True
        recorder.revision += held
        recorder.claimed = held
        return held

    def _new_claim(self, turn_input: TurnInput, request: RequestRef | None = None) -> Claim:
        now = self._clock()
        return Claim(
            token=secrets.token_hex(16),
            message=turn_input.message,
            data=turn_input.data,
            started_at=now,
            expires_at=now + self._settings.lease,
            request=request,
        )


class _TurnRecorder:
    """What the engine has emitted in this turn, and how much of it is stored (and so may
    be shown). Events are published to the turn's live feed once stored; LLM text as it
    arrives, unless events before it are still waiting to be stored."""

    def __init__(
        self,
        run: RunDocument,
        claim: Claim,
        live: LiveTurn | None,
        replayed: list[Event],
        stored: bool,
        claimed: bool,
    ) -> None:
        self._run = run
        self._claim = claim
        self._live = live
        self.run_id = run.id
        self.tenant = run.tenant
        self.token = claim.token
        self.run_stored = stored  # False: a blocking first turn's run, not stored yet
        self.claimed = claimed and stored  # False: not claimed yet (see the executor)
        # The run's revision as stored now, as far as this turn knows: every write this
        # turn makes to the run increments it (see ``RunStore``).
        self.revision = run.revision
        self.lock = asyncio.Lock()  # one write of the turn's progress at a time
        self.state_bytes: int | None = None
        self._replayed = {event.seq: event for event in replayed}
        self._replayed_through = replayed[-1].seq if replayed else 0
        self._log = list(run.log)  # the run's log as stored, this turn's events included
        self.state_before = run.state
        self._unstored: list[Event] = []
        self._unshown: list[Event | LlmDelta] = []
        self.current_node = run.state.current_node
        self._visited = set(run.visited_nodes)
        self.visited_nodes = list(run.visited_nodes)
        self.live_text: LiveText | None = None
        self.urgent = asyncio.Event()
        self.on_urgent: Any = None

    def run_expired(self, now: datetime) -> bool:
        """Whether the run is past its cleanup_after as the turn read it: for a turn that
        has not claimed it, as stored too, while its revision is unchanged."""
        return self._run.expired(now)

    def record(self, item: Event | LlmDelta) -> None:
        if isinstance(item, LlmDelta):
            if self.live_text is not None:
                self.live_text.text += item.text
            if self._unshown or self._live is None:
                self._unshown.append(item)
            else:
                self._live.publish([item])
            return
        if item.seq <= self._replayed_through:
            self._replay(item)
        else:
            self._unstored.append(item)
            self._unshown.append(item)
        if item.type == "node_started":
            self.current_node = item.node_id
        elif item.type == "node_completed" and item.node_id not in self._visited:
            assert item.node_id is not None
            self._visited.add(item.node_id)
            self.visited_nodes.append(item.node_id)
        elif item.type == "llm_started":
            assert item.node_id is not None
            self.live_text = LiveText(after_seq=item.seq, node_id=item.node_id, text="")
            if self._live is not None and self._live.subscribers and self.on_urgent is not None:
                self.urgent.set()  # a stream here waits for the text: store what precedes it
                self.on_urgent()
        elif item.type == "llm_completed":
            self.live_text = None

    def _replay(self, item: Event) -> None:
        """An event an interrupted attempt of this turn stored: it stays as stored (its seq
        names it forever), and is shown here as the live feed reaches it."""
        stored = self._replayed[item.seq]
        if (stored.type, stored.node_id, stored.data) != (item.type, item.node_id, item.data):
            logger.warning(
                "run %s: event %d of the interrupted turn replayed as %s, stored as %s; "
                "keeping what was stored",
                self.run_id,
                item.seq,
                item.type,
                stored.type,
            )
        if self._unshown or self._live is None:
            self._unshown.append(stored)
        else:
            self._live.publish([stored])

    def new_events(self, events: list[Event]) -> list[Event]:
        """The turn's events that were not stored by an interrupted attempt of it."""
        return [event for event in events if event.seq > self._replayed_through]

    def unstored(self) -> tuple[list[Event], int]:
        """The events not stored yet, and how many items may be shown once they are."""
        return list(self._unstored), len(self._unshown)

    def log_with(self, events: list[Event]) -> list[Event]:
        """The run's log once ``events`` are stored too."""
        return [*self._log, *events]

    def in_flight(self, log: list[Event], expires_at: datetime) -> RunDocument:
        """The run as a progress record stores it: claimed, with ``log`` as its log."""
        return msgspec.structs.replace(
            self._run, claim=self.in_flight_claim(expires_at, with_text=True), log=log
        )

    def in_flight_claim(self, expires_at: datetime, *, with_text: bool) -> Claim:
        """The turn's claim as a progress record stores it (``with_text``: its LLM text)."""
        return msgspec.structs.replace(
            self._claim,
            current_node=self.current_node,
            visited_nodes=list(self.visited_nodes),
            live_text=self.live_text if with_text else None,
            expires_at=expires_at,
        )

    def stored_run(self, run: RunDocument) -> RunDocument:
        """``run`` (as claimed) with the log as stored now: the events of this turn that
        progress records have stored (and so perhaps shown) included."""
        return msgspec.structs.replace(run, log=list(self._log))

    def stored(self, events: int, shown: int) -> None:
        self._log += self._unstored[:events]
        del self._unstored[:events]
        if self._live is not None:
            self._live.publish(self._unshown[:shown])
        del self._unshown[:shown]

    def stored_all(self) -> None:
        self.stored(len(self._unstored), len(self._unshown))


class _RunChanged(Exception):
    """A turn on a cached run found it changed before it could claim or commit it."""


class _ClaimingLlm:
    """The LLM for a turn on a cached run: the turn claims the run before its first call
    (``claim``: a no-op once claimed), so that a provider is never called for a turn that
    is then executed again."""

    def __init__(self, llm: LlmClient, claim: Callable[[], Awaitable[bool]]) -> None:
        self._llm = llm
        self._claim = claim
        self.default_model = llm.default_model

    async def complete(self, call: LlmCall, on_delta: Callable[[str], None]) -> LlmReply:
        if not await self._claim():
            raise asyncio.CancelledError  # the run changed: the turn is executed again
        return await self._llm.complete(call, on_delta)


class _ReplayedLlm:
    """The LLM for a turn executed again: the calls its interrupted attempt completed (their
    ``llm_completed`` is stored, perhaps shown) answer what they answered then, so that the
    replay goes the same way; later calls go to the provider."""

    def __init__(self, llm: LlmClient, completed: list[Event]) -> None:
        self._llm = llm
        self._completed = list(completed)
        self.default_model = llm.default_model

    async def complete(self, call: LlmCall, on_delta: Callable[[str], None]) -> LlmReply:
        if not self._completed:
            return await self._llm.complete(call, on_delta)
        stored = self._completed.pop(0).data
        return LlmReply(text=stored["text"], usage=stored.get("usage"))


def _too_large(turn: int, stored: int, limit: int, state: CommittedState) -> str:
    """Why a turn could not be stored: the sizes, the limit, and the largest variable."""
    largest = largest_variable(state)
    culprit = (
        f"; its largest variable is '{largest[0][:100]}' ({largest[1]:,} bytes as JSON)"
        if largest is not None
        else ""
    )
    return (
        f"Turn {turn} would store {stored:,} bytes (the run's variables, history and output, "
        f"and its latest events), more than {limit:,} (limit max_stored_bytes){culprit}. The "
        "run keeps its state from before the turn."
    )
