"""The stored documents, as msgspec Structs, and the two functions that convert them.

``to_document`` and ``from_document`` are the only places where Structs become
MongoDB documents and back.

Free-form JSON that users supply or workflows compute (variables, history, data,
outputs, events) is stored as JSON text in ``*_json`` fields: any JSON value
round-trips unchanged (MongoDB refuses keys that start with ``$`` or hold a
``.``), and a turn's state is written and read whole, never queried field by
field. Everything Tandem itself queries is a typed field.
"""

from datetime import datetime
from typing import Any, TypeVar

import msgspec
from bson import ObjectId

from app.engine.state import Event, HistoryEntry, RunState, RunStatus, WaitingFor


class WorkflowDocument(msgspec.Struct, kw_only=True):
    id: ObjectId = msgspec.field(name="_id")
    tenant: str
    name: str
    description: str | None
    latest_version: int
    created_at: datetime
    updated_at: datetime


class VersionDocument(msgspec.Struct, kw_only=True):
    id: ObjectId = msgspec.field(name="_id")
    tenant: str
    workflow_id: ObjectId
    version: int
    definition: dict[str, Any]
    created_at: datetime


class VersionSummary(msgspec.Struct):
    version: int
    created_at: datetime


class Claim(msgspec.Struct, kw_only=True):
    """The lease a turn holds on a run while it executes, with the input it must not lose.
    The claimed turn is always the run's ``turn`` + 1."""

    token: str
    message: str | None
    data_json: str
    expires_at: datetime
    # How many times this turn was taken over after its server died (see TurnService).
    recoveries: int = 0

    @property
    def data(self) -> Any:
        return load_json(self.data_json)


class RunProgress(msgspec.Struct, kw_only=True):
    """What a committed turn changes in a run: its state, counters and the turn's events."""

    status: RunStatus
    turn: int
    seq: int
    current_node: str | None
    variables_json: str
    history_json: str
    waiting_for: WaitingFor | None
    output_json: str
    error: str | None
    last_events_json: str
    updated_at: datetime

    @classmethod
    def before_first_turn(cls, inputs: dict[str, Any], now: datetime) -> "RunProgress":
        """A new run: its variables are the first turn's ``inputs``, nothing has happened."""
        return cls(
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
        )

    @classmethod
    def after_turn(
        cls, state: RunState, *, turn: int, seq: int, events: list[Event], now: datetime
    ) -> "RunProgress":
        """What a turn that left the run in ``state`` and emitted ``events`` commits."""
        return cls(
            status=state.status,
            turn=turn,
            seq=seq,
            current_node=state.current_node,
            variables_json=dump_json(state.variables),
            history_json=dump_json(state.history),
            waiting_for=state.waiting_for,
            output_json=dump_json(state.output),
            error=state.error,
            last_events_json=encode_events(events),
            updated_at=now,
        )

    @property
    def variables(self) -> dict[str, Any]:
        variables: dict[str, Any] = load_json(self.variables_json)
        return variables

    @property
    def output(self) -> Any:
        return load_json(self.output_json)

    def last_events(self) -> list[Event]:
        return decode_events(self.last_events_json)

    def engine_state(self) -> RunState:
        return RunState(
            status=self.status,
            current_node=self.current_node,
            variables=self.variables,
            history=_HISTORY_DECODER.decode(self.history_json),
            waiting_for=self.waiting_for,
            output=self.output,
            error=self.error,
        )


class RunDocument(msgspec.Struct, kw_only=True):
    """A run. ``progress`` is what its last committed turn left; ``claim`` marks a turn
    executing now. ``progress.last_events_json`` holds the events of turn
    ``progress.turn`` until the next turn copies them into the events collection (one
    round trip later, never lost)."""

    id: ObjectId = msgspec.field(name="_id")
    tenant: str
    workflow_id: ObjectId
    version: int
    revision: int
    claim: Claim | None
    created_at: datetime
    progress: RunProgress
    # How many times, over the run's life, an interrupted turn was executed again.
    retry_count: int = 0


class TurnEventsDocument(msgspec.Struct, kw_only=True):
    """The events of one turn of one run: one document a turn, so none grows without bound.
    Its ``_id`` is ``<run_id>:<turn, 8 digits>``: unique by construction, and ordered."""

    id: str = msgspec.field(name="_id")
    tenant: str
    run_id: ObjectId
    turn: int
    events_json: str


_EVENTS_DECODER = msgspec.json.Decoder(list[Event])
_HISTORY_DECODER = msgspec.json.Decoder(list[HistoryEntry])


def dump_json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def load_json(text: str) -> Any:
    return msgspec.json.decode(text)


def encode_events(events: list[Event]) -> str:
    """Events as the JSON the API answers with."""
    return dump_json(events)


def decode_events(text: str) -> list[Event]:
    return _EVENTS_DECODER.decode(text) if text else []


def turn_events_id(run_id: ObjectId, turn: int) -> str:
    return f"{run_id}:{turn:08d}"


def to_document(value: msgspec.Struct) -> dict[str, Any]:
    """A Struct as a MongoDB document."""
    document: dict[str, Any] = msgspec.to_builtins(value, builtin_types=(ObjectId, datetime))
    return document


StructT = TypeVar("StructT", bound=msgspec.Struct)


def from_document(raw: dict[str, Any], kind: type[StructT]) -> StructT:
    """A MongoDB document as a Struct of type ``kind``."""
    return msgspec.convert(raw, kind, dec_hook=_decode_object_id)


def _decode_object_id(kind: type, value: Any) -> Any:
    if kind is ObjectId and isinstance(value, ObjectId):
        return value
    raise NotImplementedError(f"cannot convert {type(value).__name__} to {kind.__name__}")
