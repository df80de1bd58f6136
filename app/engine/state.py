"""What a run is made of between turns, and what a turn emits."""

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

import msgspec


class RunStatus(StrEnum):
    NOT_STARTED = "not_started"
    STARTED = "started"
    RUNNING = "running"
    FAILED = "failed"
    COMPLETED = "completed"
    PAUSED = "paused"
    WAITING_FOR_USER_INPUT = "waiting_for_user_input"
    CANCELLED = "cancelled"
    ABORTED_LOOPING_RISK = "aborted_looping_risk"


TERMINAL_STATUSES = frozenset(
    {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.ABORTED_LOOPING_RISK}
)
WAITING_STATUSES = frozenset({RunStatus.WAITING_FOR_USER_INPUT, RunStatus.PAUSED})

EventType = Literal[
    "run_started",
    "node_started",
    "node_completed",
    "message",
    "state",
    "llm_started",
    "llm_completed",
    "input_received",
    "input_rejected",
    "waiting_for_input",
    "paused",
    "run_completed",
    "run_failed",
    "run_cancelled",
    "run_aborted",
]


class Event(msgspec.Struct, kw_only=True, gc=False):
    """One thing that happened in a run; ``seq`` counts from 1 over the whole run.

    Not tracked by the garbage collector (an event holds no cycle): a long turn emits
    tens of thousands, and tracking them made full collections pause the server for
    tens of milliseconds."""

    seq: int
    turn: int
    type: EventType
    node_id: str | None
    at: datetime
    data: dict[str, Any]


class LlmDelta(msgspec.Struct):
    """A piece of LLM text as it is generated: streamed to clients, never stored."""

    node_id: str
    text: str


class HistoryEntry(msgspec.Struct, gc=False):
    role: Literal["user", "assistant"]
    text: str


WaitKind = Literal["message", "continue"]


class WaitingFor(msgspec.Struct, kw_only=True):
    """What the next turn must bring: a message for an input node, anything for a pause."""

    node_id: str
    kind: WaitKind
    prompt: str | None
    choices: list[str] | None


class RunState(msgspec.Struct, kw_only=True):
    """The part of a run that the engine reads and writes."""

    status: RunStatus = RunStatus.NOT_STARTED
    current_node: str | None = None
    variables: dict[str, Any] = msgspec.field(default_factory=dict)
    history: list[HistoryEntry] = msgspec.field(default_factory=list)
    waiting_for: WaitingFor | None = None
    output: Any = None
    error: str | None = None


class TurnInput(msgspec.Struct, kw_only=True):
    """What a client brings to a turn: a message and data for the node the run waits at."""

    message: str | None = None
    data: Any = None
