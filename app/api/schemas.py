"""Request and response bodies of the HTTP API (``shared/api.md``)."""

from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from app.engine.state import Event, RunStatus, WaitingFor
from app.errors import ErrorItem


class _Request(msgspec.Struct, forbid_unknown_fields=True):
    pass


class CreateWorkflowRequest(_Request):
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    definition: Annotated[Any, Meta(description="A workflow definition (workflow-language.md).")]
    description: Annotated[str, Meta(max_length=2_000)] | None = None


class PublishVersionRequest(_Request):
    definition: Annotated[Any, Meta(description="A workflow definition (workflow-language.md).")]


class RunInput(_Request):
    message: str | None = None
    data: Any = None
    command: Annotated[str | None, Meta(description='Only "stop".')] = None


class ExecuteRequest(_Request):
    run_id: Annotated[str | None, Meta(description="Absent on the first turn.")] = None
    inputs: dict[str, Any] | None = None
    run_input: RunInput | None = None


class ErrorBody(msgspec.Struct, omit_defaults=True):
    detail: str
    code: str
    errors: list[ErrorItem] | None = None


class WorkflowCreated(msgspec.Struct):
    workflow_id: str
    name: str
    version: int
    created_at: datetime


class VersionCreated(msgspec.Struct):
    workflow_id: str
    version: int


class WorkflowSummary(msgspec.Struct):
    workflow_id: str
    name: str
    description: str | None
    latest_version: int
    created_at: datetime


class WorkflowPage(msgspec.Struct):
    items: list[WorkflowSummary]
    next_cursor: str | None


class VersionInfo(msgspec.Struct):
    version: int
    created_at: datetime


class WorkflowDetail(msgspec.Struct):
    workflow_id: str
    name: str
    description: str | None
    latest_version: int
    versions: list[VersionInfo]
    created_at: datetime


class VersionDetail(msgspec.Struct):
    workflow_id: str
    version: int
    definition: dict[str, Any]
    created_at: datetime


class TurnAnswer(msgspec.Struct):
    run_id: str
    workflow_id: str
    version: int
    status: RunStatus
    turn: int
    events: list[Event]
    is_waiting_for_input: bool
    is_terminal: bool
    waiting_for: WaitingFor | None
    output: Any
    error: str | None


class RunDetail(msgspec.Struct):
    run_id: str
    workflow_id: str
    version: int
    status: RunStatus
    turn: int
    created_at: datetime
    updated_at: datetime
    waiting_for: WaitingFor | None
    output: Any
    error: str | None
    variables: dict[str, Any]


class RunEvents(msgspec.Struct):
    run_id: str
    events: list[Event]


class Health(msgspec.Struct):
    status: str
