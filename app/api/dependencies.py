"""What controllers receive: the tenant of the request and the services, from app state."""

from typing import Any

from litestar import Request
from litestar.datastructures import State

from app.services.run_services import RunServices
from app.services.workflows import WorkflowService
from app.store.store import Store

# The authenticated request: its ``user`` is the tenant of the API key (see auth.py).
# Handlers read it from the request rather than through a dependency: Litestar resolves
# two or more dependencies of a handler in a task group, a cost paid on every turn.
Caller = Request[str, Any, Any]


def run_services(request: Caller) -> RunServices:
    """The run services, for a handler that takes them from the request rather than as
    the ``runs`` dependency (the execute handler: a dependency is resolved every turn)."""
    services: RunServices = request.app.state.runs
    return services


def provide_workflows(state: State) -> WorkflowService:
    service: WorkflowService = state.workflows
    return service


def provide_runs(state: State) -> RunServices:
    services: RunServices = state.runs
    return services


def provide_store(state: State) -> Store:
    store: Store = state.store
    return store


# Every /v1 route takes either scheme (see app/server.py); health routes take none.
API_KEY_SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}, {"Bearer": []}]
