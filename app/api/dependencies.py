"""What controllers receive: the tenant of the request and the services, from app state."""

from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec

from app.api.schemas import ErrorBody
from app.config import Settings
from app.services.turns import TurnService
from app.services.workflows import WorkflowService
from app.store.store import Store


def provide_tenant(request: Request[str, Any, Any]) -> str:
    return request.user


def provide_workflows(state: State) -> WorkflowService:
    service: WorkflowService = state.workflows
    return service


def provide_turns(state: State) -> TurnService:
    service: TurnService = state.turns
    return service


def provide_settings(state: State) -> Settings:
    settings: Settings = state.settings
    return settings


def provide_store(state: State) -> Store:
    store: Store = state.store
    return store


# Every /v1 route takes either scheme (see app/server.py); health routes take none.
API_KEY_SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}, {"Bearer": []}]

_DESCRIPTIONS = {
    400: "Malformed JSON, id, field or value",
    401: "Missing or unknown API key",
    404: "No such workflow, version or run for this tenant",
    409: "The run is executing a turn, or is terminal",
    413: "Request body too large",
    422: "The definition is not valid",
    503: "MongoDB does not answer",
}


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error answers of a route."""
    return {
        status: ResponseSpec(data_container=ErrorBody, description=_DESCRIPTIONS[status])
        for status in statuses
    }
