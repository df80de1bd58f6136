"""``/v1/workflows``: publish, version and read workflow definitions."""

from typing import Any

from litestar import Controller, Response, get, post, route
from litestar.di import NamedDependency
from litestar.params import JSONBody

from app.api.dependencies import API_KEY_SECURITY, Caller
from app.api.errors import error_responses
from app.api.params import (
    DEFAULT_LIMIT,
    CursorQuery,
    IdPath,
    JsonBodyRequest,
    LimitQuery,
    VersionPath,
    object_id,
)
from app.api.schemas import (
    CreateWorkflowRequest,
    PublishVersionRequest,
    VersionCreated,
    VersionDetail,
    VersionInfo,
    WorkflowCreated,
    WorkflowDetail,
    WorkflowPage,
    WorkflowSummary,
)
from app.services.workflows import WorkflowService

Workflows = NamedDependency[WorkflowService]

# The error codes each route answers with (documented by error_responses).
_BODY = ("invalid_json", "validation_error", "invalid_input", "payload_too_large")
_READ = ("invalid_id", "unauthorized", "not_found")


class WorkflowController(Controller):
    request_class = JsonBodyRequest
    path = "/v1/workflows"
    tags = ["workflows"]
    security = API_KEY_SECURITY

    @route("/", http_method="OPTIONS", include_in_schema=False)
    async def allowed_methods(self) -> Response[None]:
        # Litestar 2 answers OPTIONS with the methods of a path's first handler only
        # (litestar-org/litestar#4169, fixed in Litestar 3); this path has two. A
        # controller's handlers are registered in name order, so this one's name must
        # sort first: Litestar adds its own OPTIONS handler only to a new path.
        return Response(None, status_code=204, headers={"Allow": "GET, OPTIONS, POST"})

    @post(
        "/",
        summary="Create a workflow with its version 0",
        responses=error_responses(*_BODY, "unauthorized", "invalid_definition"),
    )
    async def create(
        self, request: Caller, workflows: Workflows, data: JSONBody[CreateWorkflowRequest]
    ) -> WorkflowCreated:
        workflow = await workflows.create(
            request.user, data.name, data.description, data.definition
        )
        return WorkflowCreated(
            workflow_id=str(workflow.id),
            name=workflow.name,
            version=0,
            created_at=workflow.created_at,
        )

    @post(
        "/{workflow_id:str}/versions",
        summary="Publish a new version",
        description=(
            "Stores the definition as the next version. The answer comes about a quarter"
            " of a second after it is stored (the server's TANDEM_LATEST_VERSION_MS, and"
            " 50 ms more): from then on a first turn without `?version` pins this version"
            " (or a later one), whichever server process it reaches."
        ),
        responses=error_responses(*_BODY, *_READ, "invalid_definition"),
    )
    async def publish(
        self,
        request: Caller,
        workflows: Workflows,
        workflow_id: IdPath,
        data: JSONBody[PublishVersionRequest],
    ) -> VersionCreated:
        version = await workflows.publish(
            request.user, object_id(workflow_id, "workflow_id"), data.definition
        )
        return VersionCreated(workflow_id=workflow_id.lower(), version=version)

    @get(
        "/",
        summary="List workflows, newest first",
        responses=error_responses("invalid_id", "validation_error", "unauthorized"),
    )
    async def list_workflows(
        self,
        request: Caller,
        workflows: Workflows,
        limit: LimitQuery = DEFAULT_LIMIT,
        cursor: CursorQuery = None,
    ) -> WorkflowPage:
        before = object_id(cursor, "cursor") if cursor is not None else None
        # One more than asked tells whether a next page exists: no empty last page.
        found = await workflows.list_page(request.user, limit + 1, before)
        page = found[:limit]
        items = [
            WorkflowSummary(
                workflow_id=str(w.id),
                name=w.name,
                description=w.description,
                latest_version=w.latest_version,
                created_at=w.created_at,
            )
            for w in page
        ]
        next_cursor = items[-1].workflow_id if len(found) > limit else None
        return WorkflowPage(items=items, next_cursor=next_cursor)

    @get("/{workflow_id:str}", summary="Read a workflow", responses=error_responses(*_READ))
    async def read(
        self, request: Caller, workflows: Workflows, workflow_id: IdPath
    ) -> WorkflowDetail:
        workflow = await workflows.get(request.user, object_id(workflow_id, "workflow_id"))
        versions = await workflows.versions(request.user, workflow.id)
        return WorkflowDetail(
            workflow_id=str(workflow.id),
            name=workflow.name,
            description=workflow.description,
            latest_version=workflow.latest_version,
            versions=[VersionInfo(version=v.version, created_at=v.created_at) for v in versions],
            created_at=workflow.created_at,
        )

    @get(
        "/{workflow_id:str}/versions/{version:int}",
        summary="Read one version's definition",
        responses=error_responses(*_READ, "validation_error"),
    )
    async def read_version(
        self,
        request: Caller,
        workflows: Workflows,
        workflow_id: IdPath,
        version: VersionPath,
    ) -> VersionDetail:
        document = await workflows.get_version(
            request.user, object_id(workflow_id, "workflow_id"), version
        )
        definition: dict[str, Any] = document.definition
        return VersionDetail(
            workflow_id=str(document.workflow_id),
            version=document.version,
            definition=definition,
            created_at=document.created_at,
        )
