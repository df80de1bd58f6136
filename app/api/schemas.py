"""Request and response bodies of the HTTP API (``shared/api.md``).

Some fields are documented more precisely than msgspec checks them, so that the
contract's own code answers them: ids (``app.api.params.object_id``, ``invalid_id``)
and ``command`` (``unknown_command``) with ``Meta(extra_json_schema={"extra": ...})``,
which Litestar copies into the OpenAPI schema; definitions (the compiler,
``invalid_definition`` with paths) with ``Meta(extra={"documented_as": ...})``, which
the schema plugin of ``app/api/openapi.py`` reads.
"""

from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from app.engine.definition import Definition
from app.engine.state import Event, RunStatus, WaitingFor
from app.engine.templating import MAX_VALUE_DEPTH
from app.errors import ErrorItem

# Ids are read in either case and always written lowercase.
ID_PATTERN_IN = "^[0-9a-fA-F]{24}$"
ID_PATTERN_OUT = "^[0-9a-f]{24}$"
ID_DESCRIPTION = "A MongoDB ObjectId: 24 hexadecimal digits."

Id = Annotated[str, Meta(pattern=ID_PATTERN_OUT, description=ID_DESCRIPTION)]
DefinitionDocument = Annotated[
    Any,
    Meta(
        description="A workflow definition (workflow-language.md). It is checked when published: "
        "a definition with problems is refused with 422 invalid_definition, one error per problem.",
        extra={"documented_as": Definition},
    ),
]
FREE_JSON = f"Any JSON value nested at most {MAX_VALUE_DEPTH} levels deep."

# Every code an error answer carries, with its status and when (the README's table).
ERROR_CODES: dict[str, tuple[int, str]] = {
    "invalid_json": (400, "the body is not JSON, or a string in it is not valid UTF-8"),
    "validation_error": (
        400,
        "a field is missing, unknown or of the wrong type; a bad query or path value",
    ),
    "invalid_id": (400, "an id that is not 24 hexadecimal digits, in a path, a body or a cursor"),
    "invalid_input": (
        400,
        f"`inputs` or `data` nested deeper than {MAX_VALUE_DEPTH} levels, an integer beyond "
        "64 bits, text that is not valid Unicode, or `inputs.history` (reserved)",
    ),
    "message_too_large": (400, "a message over the size limit (32 KiB)"),
    "unknown_command": (400, "a `command` other than `stop`"),
    "bad_request": (400, "a stop without `run_id`; any other malformed request"),
    "unauthorized": (401, "a missing or unknown API key"),
    "not_found": (404, "no such workflow, version, run or path for this tenant"),
    "method_not_allowed": (405, "a method the path does not take"),
    "turn_in_progress": (409, "the run is executing another turn"),
    "run_terminal": (409, "the run is completed, failed, cancelled or aborted"),
    "request_in_progress": (
        409,
        "the first request with this `Idempotency-Key` is still executing; retry later",
    ),
    "payload_too_large": (413, "a body over the size limit (1 MiB)"),
    "invalid_definition": (
        422,
        "a definition with problems, each listed with its path; for a new run, a version "
        "stored under other rules that no longer compiles on this server",
    ),
    "idempotency_key_reused": (
        422,
        "this `Idempotency-Key` was first sent with another request (method, path, body, "
        "`Accept`, `Prefer` or `X-Execution-Source`)",
    ),
    "internal_error": (500, "the server failed; never expected for any input"),
    "unavailable": (503, "MongoDB does not answer"),
}


class _Request(msgspec.Struct, forbid_unknown_fields=True):
    pass


class CreateWorkflowRequest(_Request):
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    definition: DefinitionDocument
    description: Annotated[str, Meta(max_length=2_000)] | None = None


class PublishVersionRequest(_Request):
    definition: DefinitionDocument


class RunInput(_Request):
    message: Annotated[str | None, Meta(description="The answer to the node the run waits at.")] = (
        None
    )
    data: Annotated[Any, Meta(description=FREE_JSON)] = None
    # Documented as an enum, but checked by params.turn_request (400 unknown_command).
    command: Annotated[
        str | None,
        Meta(description='Only "stop".', extra_json_schema={"extra": {"enum": ["stop", None]}}),
    ] = None


class ExecuteRequest(_Request):
    run_id: (
        Annotated[
            str,
            Meta(
                description="The run to continue; absent on the first turn.",
                extra_json_schema={"extra": {"pattern": ID_PATTERN_IN}},
            ),
        ]
        | None
    ) = None
    inputs: Annotated[
        dict[str, Any] | None,
        Meta(description="The run's first variables (first turn only). " + FREE_JSON),
    ] = None
    run_input: RunInput | None = None


class ErrorBody(msgspec.Struct, omit_defaults=True):
    detail: Annotated[str, Meta(description="A sentence for humans.")]
    code: Annotated[
        str,
        Meta(
            description="What went wrong, for programs.",
            extra_json_schema={"extra": {"enum": list(ERROR_CODES)}},
        ),
    ]
    errors: Annotated[list[ErrorItem] | None, Meta(description="One entry per field at fault.")] = (
        None
    )


class WorkflowCreated(msgspec.Struct):
    workflow_id: Id
    name: str
    version: int
    created_at: datetime


class VersionCreated(msgspec.Struct):
    workflow_id: Id
    version: int


class WorkflowSummary(msgspec.Struct):
    workflow_id: Id
    name: str
    description: str | None
    latest_version: int
    created_at: datetime


class WorkflowPage(msgspec.Struct):
    items: list[WorkflowSummary]
    next_cursor: Id | None


class VersionInfo(msgspec.Struct):
    version: int
    created_at: datetime


class WorkflowDetail(msgspec.Struct):
    workflow_id: Id
    name: str
    description: str | None
    latest_version: int
    versions: list[VersionInfo]
    created_at: datetime


class VersionDetail(msgspec.Struct):
    workflow_id: Id
    version: int
    definition: DefinitionDocument
    created_at: datetime


class TurnAnswer(msgspec.Struct):
    run_id: Id
    workflow_id: Id
    version: int
    status: RunStatus
    turn: int
    events: list[Event]
    is_waiting_for_input: bool
    is_terminal: bool
    waiting_for: WaitingFor | None
    output: Any
    error: str | None


# Fields that a run's detail and a listing's summary both carry.
Progress = Annotated[
    int,
    Meta(
        ge=0,
        le=100,
        description="How much of the workflow the run has done: 100 once it has ended;"
        " before, the share of the workflow's nodes it has executed at least once (each"
        " node counted once, however often a loop runs it), at most 99.",
    ),
]
CurrentNode = Annotated[
    str | None, Meta(description="The node executing now, or where the run waits or ended.")
]
CompletedAt = Annotated[
    datetime | None, Meta(description="When the run ended; null while it can go on.")
]
CleanupAfter = Annotated[
    datetime | None,
    Meta(
        description="When the run and its events are deleted, unless a turn comes first"
        " (each turn sets it to the retention period after itself); from then on every"
        " request for the run answers 404. Null: the run is kept forever."
    ),
]
ExecutionSource = Annotated[
    str,
    Meta(
        description="Who started the run: the `X-Execution-Source` header of its first"
        " turn (`API` when absent; the playground sends `PLAYGROUND`)."
    ),
]


class RunDetail(msgspec.Struct):
    run_id: Id
    workflow_id: Id
    version: int
    status: RunStatus
    turn: int
    created_at: datetime
    updated_at: datetime
    waiting_for: WaitingFor | None
    output: Any
    error: str | None
    variables: dict[str, Any]
    progress: Progress
    current_node: CurrentNode
    completed_nodes: Annotated[
        int, Meta(description="How many distinct nodes the run has executed at least once.")
    ]
    total_nodes: Annotated[int, Meta(description="How many nodes the run's workflow version has.")]
    started_at: Annotated[datetime, Meta(description="When the run's first turn started.")]
    completed_at: CompletedAt
    cleanup_after: CleanupAfter
    execution_source: ExecutionSource
    retry_count: Annotated[
        int,
        Meta(
            description="How many times an interrupted turn (its server died) was executed again."
        ),
    ]


class RunSummary(msgspec.Struct):
    """A run in a listing: where it stands, without its variables, output or events (read
    them with ``GET /v1/runs/{run_id}``)."""

    run_id: Id
    workflow_id: Id
    version: int
    status: RunStatus
    turn: int
    progress: Progress
    current_node: CurrentNode
    execution_source: ExecutionSource
    created_at: datetime
    updated_at: Annotated[
        datetime,
        Meta(description="When the run's last turn was committed (before any was: created_at)."),
    ]
    completed_at: CompletedAt
    cleanup_after: CleanupAfter


class RunPage(msgspec.Struct):
    """Runs, newest first; ``next_cursor`` (null on the last page) is the ``cursor`` of the
    next page."""

    items: list[RunSummary]
    next_cursor: Id | None


class TurnAccepted(msgspec.Struct):
    """What ``POST .../execute`` with ``Prefer: respond-async`` answers (``202``)."""

    run_id: Id
    turn: Annotated[int, Meta(description="The turn now executing in the background.")]
    status: RunStatus
    status_url: Annotated[str, Meta(description="`GET` it to poll the run (also `Location`).")]
    stream_url: Annotated[str, Meta(description="`GET` it to follow the run's events (SSE).")]
    cancel_url: Annotated[
        str, Meta(description="`POST` it (or `DELETE` the status URL) to cancel.")
    ]


class RunEvents(msgspec.Struct):
    run_id: Id
    events: list[Event]


class CancelAnswer(msgspec.Struct):
    """What ``DELETE /v1/runs/{run_id}`` and ``POST /v1/runs/{run_id}/cancel`` answer."""

    run_id: Id
    cancelled: bool
    previous_status: RunStatus
    message: str


class Health(msgspec.Struct):
    status: str
