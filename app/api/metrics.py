"""``GET /metrics``: the process's metrics in Prometheus's text format, public like the
health checks (they name workflows by id, never tenants, keys or text)."""

from litestar import Request, get
from litestar.response import Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.telemetry.metrics import Metrics


# Not in the OpenAPI document: Prometheus's text format, documented in the README.
@get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response[bytes]:  # type: ignore[type-arg]
    registry: Metrics = request.app.state.metrics
    return Response(registry.exposition(), media_type=CONTENT_TYPE_LATEST)
