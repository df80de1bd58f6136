"""Liveness and readiness, public."""

from litestar import get
from litestar.di import NamedDependency
from litestar.exceptions import ServiceUnavailableException

from app.api.errors import error_responses
from app.api.schemas import Health
from app.store.store import Store


@get("/healthz", tags=["health"], summary="The process answers")
async def healthz() -> Health:
    return Health(status="ok")


@get(
    "/readyz",
    tags=["health"],
    summary="MongoDB answers",
    responses=error_responses("unavailable"),
)
async def readyz(store: NamedDependency[Store]) -> Health:
    try:
        await store.ping()
    except Exception as error:
        raise ServiceUnavailableException("MongoDB does not answer.") from error
    return Health(status="ready")
