"""What the turn services share: their settings, a turn as requested, prepared and done,
and how a turn made of a single event (a stop, a failure) is written."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec
from bson import ObjectId

from app.engine.budget import EvaluationLimits
from app.engine.compiler import CompiledWorkflow
from app.engine.runner import DEFAULT_HISTORY_LIMIT
from app.engine.state import TERMINAL_STATUSES, Event, EventType, RunStatus, WaitingFor
from app.store.documents import Claim, CommittedState, RequestRef, RunDocument

DEFAULT_SOURCE = "API"


@dataclass(frozen=True, slots=True)
class TurnSettings:
    lease: timedelta = timedelta(seconds=30)
    history_limit: int = DEFAULT_HISTORY_LIMIT
    max_message_bytes: int = 32 * 1024
    # How often a turn in flight stores its progress (and learns of a stop), and how often
    # a stream follows a turn executing in another process.
    claim_poll: timedelta = timedelta(milliseconds=250)
    # A stream with nothing to send sends a comment this often, so that proxies keep it.
    stream_keepalive: timedelta = timedelta(seconds=15)
    # How many times a turn interrupted by a dying server is executed again before the
    # run fails: a turn that kills its server every time must not be retried forever.
    max_turn_recoveries: int = 2
    # What a run's stored state (variables, history, output) and its log may take,
    # encoded: well under MongoDB's 16 MB a document.
    max_stored_bytes: int = 8 * 1024 * 1024
    # How long an Idempotency-Key is remembered, from its first request.
    idempotency_lifetime: timedelta = timedelta(hours=24)
    # What the runs cached for their next turn may take (see ``RunCache``); 0: no cache.
    run_cache_bytes: int = 64 * 1024 * 1024

    # How long a run is kept after its last turn (None: forever): see ``cleanup_after``.
    run_retention: timedelta | None = timedelta(days=30)
    evaluation_limits: EvaluationLimits = field(default_factory=EvaluationLimits)

    def cleanup_after(self, now: datetime) -> datetime | None:
        """When a run active ``now`` is deleted unless another turn comes first."""
        return now + self.run_retention if self.run_retention is not None else None


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """A turn as the HTTP layer understood it: ids parsed, sizes and values checked."""

    run_id: ObjectId | None = None
    version: int | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    message: str | None = None
    data: Any = None
    stop: bool = False
    # Who starts the run (``API``, ``PLAYGROUND``, …), shown in its status.
    source: str = DEFAULT_SOURCE
    # The keyed request (Idempotency-Key) the turn answers, and for a first turn the id
    # its run takes, chosen with the key so that a retry can find the run.
    request: RequestRef | None = None
    new_run_id: ObjectId | None = None


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
    # False for a blocking first turn: its run is stored when it ends (see the executor).
    stored: bool = True
    # False for a blocking turn of a run this process had cached: its run is claimed only
    # if the turn lasts (see the executor); ``run`` is the cached copy.
    claimed: bool = True

    @property
    def turn(self) -> int:
        """The number of the turn: the one executing, or the one done."""
        if self.done is not None:
            return self.done.run.state.turn
        return self.run.state.turn + 1


@dataclass(frozen=True, slots=True)
class SingleEventTurn:
    """A turn made of one event and nothing else (a stop; a failure of the turn as a
    whole), as it is written: the run keeps its variables, history and node."""

    event: Event
    state: CommittedState
    log: list[Event]
    completed_at: datetime | None
    cleanup_after: datetime | None


def single_event_turn(
    run: RunDocument,
    now: datetime,
    status: RunStatus,
    event: tuple[EventType, str | None, dict[str, Any]],
    error: str | None = None,
    *,
    cleanup_after: datetime | None,
) -> SingleEventTurn:
    """The run's next turn, ending with one ``(type, node_id, data)`` event under the next
    seq, after whatever the turn had already stored (a turn in flight stopped midway)."""
    event_type, node_id, data = event
    turn = run.state.turn + 1
    ending = Event(seq=run.next_seq, turn=turn, type=event_type, node_id=node_id, at=now, data=data)
    state = msgspec.structs.replace(
        run.state,
        status=status,
        turn=turn,
        seq=ending.seq,
        waiting_for=None,
        output=None,
        error=error,
        updated_at=now,
    )
    completed_at = now if status in TERMINAL_STATUSES else None
    return SingleEventTurn(ending, state, [*run.log, ending], completed_at, cleanup_after)


def events_of_turn(run: RunDocument, turn: int) -> list[Event]:
    """The events of ``turn`` still in the run's log (the latest turns are)."""
    return [event for event in run.log if event.turn == turn]


def run_id_at(now: datetime) -> ObjectId:
    """A new run's id, whose leading second is ``now``'s (the clock's, which tests move):
    listings turn time filters into bounds on ``_id``, so they must agree."""
    return ObjectId(int(now.timestamp()).to_bytes(4, "big") + ObjectId().binary[4:])


def as_left_by_turn(run: RunDocument, turn: int, events: list[Event]) -> RunDocument:
    """``run`` as its committed ``turn`` (whose ``events`` are given) left it, for that
    turn's answer: the run as it is if no turn followed; else, as the turn's last event
    says (a turn that others followed ended waiting, with nothing output and no error)."""
    if turn == run.state.turn or not events:  # (none: deleted with an expired run)
        return msgspec.structs.replace(run, claim=None)
    last = events[-1]
    assert last.type in ("waiting_for_input", "paused"), last.type
    status = (
        RunStatus.WAITING_FOR_USER_INPUT if last.type == "waiting_for_input" else RunStatus.PAUSED
    )
    state = msgspec.structs.replace(
        run.state,
        status=status,
        turn=turn,
        seq=last.seq,
        current_node=last.node_id,
        waiting_for=msgspec.convert(last.data, WaitingFor),
        output=None,
        error=None,
        updated_at=last.at,
    )
    return msgspec.structs.replace(run, state=state, claim=None, completed_at=None)


def after_single_event_turn(run: RunDocument, written: SingleEventTurn) -> RunDocument:
    return msgspec.structs.replace(
        run,
        state=written.state,
        claim=None,
        log=written.log,
        completed_at=written.completed_at,
        cleanup_after=written.cleanup_after,
    )
