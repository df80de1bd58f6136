"""The stored documents, as msgspec Structs, and the two functions that convert them.

``to_document`` and ``from_document`` are the only places where Structs become
MongoDB documents and back; user-chosen keys are escaped there (see keys.py).
"""

from datetime import datetime
from typing import Any, TypeVar

import msgspec
from bson import ObjectId

from app.engine.state import Event, HistoryEntry, RunState, RunStatus, WaitingFor
from app.store.keys import escape_keys, unescape_keys


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
    data: Any
    expires_at: datetime


class RunProgress(msgspec.Struct, kw_only=True):
    """What a committed turn changes in a run: its state, counters and the turn's events."""

    status: RunStatus
    turn: int
    seq: int
    current_node: str | None
    variables: dict[str, Any]
    history: list[HistoryEntry]
    waiting_for: WaitingFor | None
    output: Any
    error: str | None
    last_events_json: str
    updated_at: datetime


class RunDocument(RunProgress, kw_only=True):
    """A run. ``status`` is the state of the last committed turn; ``claim`` marks a turn
    executing now. ``last_events_json`` holds the events of turn ``turn`` until the next
    turn copies them into the events collection (one round trip later, never lost)."""

    id: ObjectId = msgspec.field(name="_id")
    tenant: str
    workflow_id: ObjectId
    version: int
    revision: int
    claim: Claim | None
    created_at: datetime

    def last_events(self) -> list[Event]:
        return decode_events(self.last_events_json)

    def engine_state(self) -> RunState:
        return RunState(
            status=self.status,
            current_node=self.current_node,
            variables=self.variables,
            history=self.history,
            waiting_for=self.waiting_for,
            output=self.output,
            error=self.error,
        )


class TurnEventsDocument(msgspec.Struct, kw_only=True):
    """The events of one turn of one run: one document a turn, so none grows without bound.
    Its ``_id`` is ``<run_id>:<turn, 8 digits>``: unique by construction, and ordered."""

    id: str = msgspec.field(name="_id")
    tenant: str
    run_id: ObjectId
    turn: int
    events_json: str


_EVENTS_DECODER = msgspec.json.Decoder(list[Event])


def encode_events(events: list[Event]) -> str:
    """Events as the JSON the API answers with. Stored as text: written once, read back
    whole, never queried, and so neither copied field by field nor escaped."""
    return msgspec.json.encode(events).decode()


def decode_events(text: str) -> list[Event]:
    return _EVENTS_DECODER.decode(text) if text else []


def turn_events_id(run_id: ObjectId, turn: int) -> str:
    return f"{run_id}:{turn:08d}"


def to_document(value: msgspec.Struct) -> dict[str, Any]:
    """A Struct as a MongoDB document."""
    raw = msgspec.to_builtins(value, builtin_types=(ObjectId, datetime))
    escaped: dict[str, Any] = escape_keys(raw)
    return escaped


StructT = TypeVar("StructT", bound=msgspec.Struct)


def from_document(raw: dict[str, Any], kind: type[StructT]) -> StructT:
    """A MongoDB document as a Struct of type ``kind``."""
    return msgspec.convert(unescape_keys(raw), kind, dec_hook=_decode_object_id)


def _decode_object_id(kind: type, value: Any) -> Any:
    if kind is ObjectId and isinstance(value, ObjectId):
        return value
    raise NotImplementedError(f"cannot convert {type(value).__name__} to {kind.__name__}")
