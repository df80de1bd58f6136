"""The stored documents, as msgspec Structs, and the functions that convert them.

``to_document`` and ``from_document`` are where Structs become MongoDB documents and
back. Free-form JSON (variables, outputs, turn data, event data) is stored as plain BSON
that users can query, with the few things BSON cannot hold escaped (``free_json``):
Structs carry the values as JSON has them, and only the conversions here escape them.
"""

from datetime import datetime
from typing import Any, Literal, TypeVar

import bson
import msgspec
from bson import ObjectId

from app.engine.state import Event, HistoryEntry, RunState, RunStatus, WaitingFor
from app.store.free_json import escape, unescape


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


class LiveText(msgspec.Struct, kw_only=True):
    """The text an LLM call has generated so far, for streams in other server processes:
    it follows the event ``after_seq`` (the call's ``llm_started``)."""

    after_seq: int
    node_id: str
    text: str


class RequestRef(msgspec.Struct, kw_only=True):
    """The keyed request (``Idempotency-Key``) that a claimed turn answers: the ``_id`` of
    its record in ``idempotency_keys`` and the token of the attempt that claimed the run.
    Whoever executes the turn, its own request or a recovery after its server died, links
    the record to the turn before committing it (see ``IdempotencyStore.link``)."""

    key_id: str
    token: str


class Claim(msgspec.Struct, kw_only=True):
    """The lease a turn holds on a run while it executes, the input it must not lose, and
    how far it has got (written every poll interval while it runs, for status polling and
    for streams in other processes). The claimed turn is always ``state.turn`` + 1."""

    token: str
    message: str | None
    data: Any
    started_at: datetime
    expires_at: datetime
    # How many times this turn was taken over after its server died (see the executor).
    recoveries: int = 0
    current_node: str | None = None
    # The nodes the run has executed at least once, this turn's so far included.
    visited_nodes: list[str] | None = None
    live_text: LiveText | None = None
    # The keyed request this turn answers, if it came with an Idempotency-Key.
    request: RequestRef | None = None


class CommittedState(msgspec.Struct, kw_only=True):
    """What the run's last committed turn left: the state the next turn resumes from."""

    status: RunStatus
    turn: int
    # The highest seq stored for the run (events of a turn in flight may go beyond it).
    seq: int
    current_node: str | None
    variables: dict[str, Any]
    history: list[HistoryEntry]
    waiting_for: WaitingFor | None
    output: Any
    error: str | None
    updated_at: datetime

    @classmethod
    def before_first_turn(cls, inputs: dict[str, Any], now: datetime) -> "CommittedState":
        """A new run: its variables are the first turn's ``inputs``, nothing has happened."""
        return cls(
            status=RunStatus.NOT_STARTED,
            turn=0,
            seq=0,
            current_node=None,
            variables=inputs,
            history=[],
            waiting_for=None,
            output=None,
            error=None,
            updated_at=now,
        )

    @classmethod
    def after_turn(cls, state: RunState, *, turn: int, seq: int, now: datetime) -> "CommittedState":
        return cls(
            status=state.status,
            turn=turn,
            seq=seq,
            current_node=state.current_node,
            variables=state.variables,
            history=state.history,
            waiting_for=state.waiting_for,
            output=state.output,
            error=state.error,
            updated_at=now,
        )

    def engine_state(self) -> RunState:
        """A copy the engine may change: a turn that loses its claim leaves no trace."""
        return RunState(
            status=self.status,
            current_node=self.current_node,
            variables=dict(self.variables),
            history=list(self.history),
            waiting_for=self.waiting_for,
            output=self.output,
            error=self.error,
        )


class RunDocument(msgspec.Struct, kw_only=True):
    """A run. ``state`` is what its last committed turn left; ``claim`` marks a turn
    executing now; ``log`` holds the run's latest events, those not yet copied into the
    events collection (see ``RunStore``): a commit writes state and events in one update.

    The log is stored as JSON text (``log_json``): it is a transit area, written and read
    whole with every turn, and queried in ``run_events``, where each event is a document.
    As text it costs MongoDB (and the embedded store even more) a fraction of what
    nested documents cost to write and read on every turn."""

    id: ObjectId = msgspec.field(name="_id")
    tenant: str
    workflow_id: ObjectId
    version: int
    revision: int
    created_at: datetime
    execution_source: str
    total_nodes: int
    state: CommittedState
    claim: Claim | None
    log: list[Event]
    # The nodes executed at least once over the run (each once: loops do not count twice).
    visited_nodes: list[str] = msgspec.field(default_factory=list)
    completed_at: datetime | None = None
    # How many times, over the run's life, an interrupted turn was executed again.
    retry_count: int = 0
    # When the run is deleted (a TTL index), renewed by every turn; None: kept forever.
    # From then on it is as good as deleted, whether or not MongoDB has got to it yet.
    # Absent from runs stored before retention existed: they load as kept forever.
    cleanup_after: datetime | None = None

    def expired(self, now: datetime) -> bool:
        """Whether the run is past its ``cleanup_after``: to every request, deleted."""
        return self.cleanup_after is not None and self.cleanup_after <= now

    @property
    def next_seq(self) -> int:
        """The seq the next stored event takes: one past every event stored so far."""
        return max(self.state.seq, self.log[-1].seq if self.log else 0) + 1


class StateSummary(msgspec.Struct, kw_only=True):
    """The part of ``CommittedState`` a listing reads."""

    status: RunStatus
    turn: int
    current_node: str | None
    updated_at: datetime


class ClaimSummary(msgspec.Struct, kw_only=True):
    """The part of ``Claim`` a listing reads: how far the executing turn has got."""

    started_at: datetime
    current_node: str | None = None
    visited_nodes: list[str] | None = None


class RunSummaryDocument(msgspec.Struct, kw_only=True):
    """A run as a listing reads it (``RUN_SUMMARY_FIELDS``): what tells where it stands,
    without its variables, history, output or log, which can weigh megabytes each."""

    id: ObjectId = msgspec.field(name="_id")
    workflow_id: ObjectId
    version: int
    created_at: datetime
    execution_source: str
    total_nodes: int
    state: StateSummary
    # Absent, not null, when the run has no claim: a projection of ``claim.*`` leaves out
    # a ``claim`` that is not a document.
    claim: ClaimSummary | None = None
    visited_nodes: list[str] = msgspec.field(default_factory=list)
    completed_at: datetime | None = None
    cleanup_after: datetime | None = None


# The projection that reads a RunSummaryDocument.
RUN_SUMMARY_FIELDS = dict.fromkeys(
    (
        "workflow_id",
        "version",
        "created_at",
        "execution_source",
        "total_nodes",
        "visited_nodes",
        "completed_at",
        "cleanup_after",
        "state.status",
        "state.turn",
        "state.current_node",
        "state.updated_at",
        "claim.started_at",
        "claim.current_node",
        "claim.visited_nodes",
    ),
    1,
)


class TurnEventsDocument(msgspec.Struct, kw_only=True):
    """The events of one turn of one run, once archived: one document a turn, so that none
    grows without bound and a turn costs one insert. Its ``_id`` is ``<run_id>:<turn, 8
    digits>``: unique by construction, and ordered."""

    id: str = msgspec.field(name="_id")
    tenant: str
    run_id: ObjectId
    turn: int
    first_seq: int
    last_seq: int
    at: datetime
    events: list[Event]
    # The run's cleanup_after when the turn was archived; later turns renew the run's, not
    # this one, which the sweep renews once it has passed (``RunStore.expire_events``):
    # events are deleted once their run has gone, never before. None: kept forever.
    cleanup_after: datetime | None = None


def turn_events_id(run_id: ObjectId, turn: int) -> str:
    return f"{run_id}:{turn:08d}"


# How a keyed request asked for its answer: as JSON, as a stream (``Accept:
# text/event-stream``), or at once with ``202`` (``Prefer: respond-async``).
AnswerMode = Literal["json", "stream", "async"]


class StoredAnswer(msgspec.Struct, kw_only=True):
    """The answer a keyed request got, as it was sent: its status, the headers that tell
    what it means (``Location`` of a ``202``), and its body as JSON text (a stream's is its
    ``turn_result``, from which it is replayed). Text, like a run's log: it holds events
    whose data may have keys BSON refuses, and it is only ever read back whole."""

    status_code: int
    headers: dict[str, str]
    body_json: str


class IdempotencyRecord(msgspec.Struct, kw_only=True):
    """A tenant's ``Idempotency-Key`` on ``POST .../execute``: which request first came
    with it (its fingerprint), which turn of which run answers it, and its answer once
    sent. Its ``_id`` is ``idempotency_record_id``: one record a key and tenant, so that of
    parallel duplicates exactly one inserts it (see ``IdempotencyStore``)."""

    id: str = msgspec.field(name="_id")
    tenant: str
    key: str
    # sha256 of the request's method, path, version, body and the headers that change
    # its answer; the same key with another fingerprint is refused.
    fingerprint: str
    mode: AnswerMode
    # The attempt that holds the key: a request taking over an expired or abandoned
    # record writes its own, and every later write of an attempt matches its token.
    token: str
    created_at: datetime
    # Past this the key is forgotten: checked here, and a TTL index deletes the record.
    expires_at: datetime
    # Until its turn is linked, the attempt is presumed alive until then (a lease).
    lease_expires_at: datetime
    # The run the request turns: the body's run_id, or the id its first turn creates.
    run_id: ObjectId
    # The turn that answers the request, once its run is claimed for it.
    turn: int | None = None
    answer: StoredAnswer | None = None


def idempotency_record_id(tenant: str, key: str) -> str:
    """``<tenant>:<key>``, the tenant's ``%`` and ``:`` percent-encoded so that no two
    (tenant, key) pairs share an id (tenants from TANDEM_API_KEYS hold no ``:`` anyway)."""
    return f"{tenant.replace('%', '%25').replace(':', '%3A')}:{key}"


def to_document(value: msgspec.Struct) -> dict[str, Any]:
    """A Struct as a MongoDB document (free-form values escaped, see ``free_json``)."""
    if isinstance(value, RunDocument):
        log, value.log = value.log, []  # stored as text, not converted
        try:
            document: dict[str, Any] = msgspec.to_builtins(
                value, builtin_types=(ObjectId, datetime)
            )
        finally:
            value.log = log
        del document["log"]
        document["log_json"] = encode_log(log)
    else:
        document = msgspec.to_builtins(value, builtin_types=(ObjectId, datetime))
    _escape_free(document, value)
    return document


StructT = TypeVar("StructT", bound=msgspec.Struct)


def from_document(raw: dict[str, Any], kind: type[StructT]) -> StructT:
    """A MongoDB document as a Struct of type ``kind`` (free-form values unescaped)."""
    _unescape_free(raw, kind)
    if kind is RunDocument:
        log = _LOG_DECODER.decode(raw.pop("log_json", "[]"))
        run = msgspec.convert(raw | {"log": []}, kind, dec_hook=_decode_object_id)
        run.log = log  # type: ignore[attr-defined]
        return run
    return msgspec.convert(raw, kind, dec_hook=_decode_object_id)


_LOG_DECODER = msgspec.json.Decoder(list[Event])


def encode_log(events: list[Event]) -> str:
    """A run's log as it is stored: JSON text (see ``RunDocument``)."""
    return msgspec.json.encode(events).decode()


# MongoDB refuses a document over 16 MiB. BSON can take several times the bytes of compact
# JSON for the same value: in an array of small integers, ``0,`` is 2 bytes of JSON and a
# BSON element of 1 (type) + its index as a key ("1234567\0", up to 8 bytes) + 4, 13 bytes;
# empty objects, floats and nulls in arrays cost less than that, keys and strings about
# the same as in JSON. So BSON takes at most this many bytes per byte of JSON, plus a few.
BSON_BYTES_PER_JSON_BYTE = 7
_BSON_SLACK = 1024
MONGODB_MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
# What a run document holds beside its state, log and the input of a turn in flight: ids,
# times, counters, the nodes visited (at most 500 names).
RUN_FIELDS_BYTES = 64 * 1024


def stored_state_bytes(state: CommittedState, room: int) -> int:
    """What ``state`` takes stored (BSON, as ``to_document`` writes it), or, when a quick
    bound of that is within ``room``, the bound: the exact size costs a second encoding,
    paid only by states large enough to come near the limit."""
    bound = len(msgspec.json.encode(state)) * BSON_BYTES_PER_JSON_BYTE + _BSON_SLACK
    if bound <= room:
        return bound
    return len(bson.encode(to_document(state)))


def largest_variable(state: CommittedState) -> tuple[str, int] | None:
    """The variable that takes the most bytes (as JSON), with its size; None if none."""
    sizes = {name: len(msgspec.json.encode(value)) for name, value in state.variables.items()}
    return max(sizes.items(), key=lambda item: item[1]) if sizes else None


# Where each stored kind keeps free-form values: escaped on the way in, unescaped out.
def _escape_free(document: dict[str, Any], value: msgspec.Struct) -> None:
    if isinstance(value, RunDocument):
        _escape_state(document["state"])
        _escape_claim(document["claim"])
    elif isinstance(value, CommittedState):
        _escape_state(document)
    elif isinstance(value, Claim):
        _escape_claim(document)
    elif isinstance(value, TurnEventsDocument):
        _escape_events(document["events"])


def _unescape_free(raw: dict[str, Any], kind: type) -> None:
    if kind is RunDocument:
        state = raw.get("state")
        if state is not None:
            state["variables"] = unescape(state.get("variables"))
            state["output"] = unescape(state.get("output"))
        claim = raw.get("claim")
        if claim is not None:
            claim["data"] = unescape(claim.get("data"))
    elif kind is Claim:
        raw["data"] = unescape(raw.get("data"))
    elif kind is TurnEventsDocument:
        for event in raw.get("events") or ():
            event["data"] = unescape(event.get("data"))


def _escape_state(state: dict[str, Any]) -> None:
    state["variables"] = escape(state["variables"])
    state["output"] = escape(state["output"])


def _escape_claim(claim: dict[str, Any] | None) -> None:
    if claim is not None:
        claim["data"] = escape(claim["data"])


def _escape_events(events: list[dict[str, Any]]) -> None:
    for event in events:
        event["data"] = escape(event["data"])


def _decode_object_id(kind: type, value: Any) -> Any:
    if kind is ObjectId and isinstance(value, ObjectId):
        return value
    raise NotImplementedError(f"cannot convert {type(value).__name__} to {kind.__name__}")
