"""The application factory: wires the store, the services and the HTTP layer."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.middleware import DefineMiddleware

from app.api import dependencies
from app.api.auth import ApiKeyAuthentication
from app.api.cors import cors_config
from app.api.errors import handle_http_exception, handle_tandem_error, handle_unexpected
from app.api.health import healthz, readyz
from app.api.metrics import metrics
from app.api.openapi import StructSchemaWithOurMeta, openapi_asset_routers, openapi_config
from app.api.request_ids import request_ids
from app.api.runs import ExecuteController, RunController, RunListController
from app.api.workflows import WorkflowController
from app.clock import Clock, utc_now
from app.config import Settings
from app.engine.llm import LlmClient
from app.errors import TandemError
from app.examples import load_examples
from app.llm import build_llm_client
from app.playground import playground_router
from app.services.latest_versions import LatestVersions
from app.services.run_services import RunServices
from app.services.turn_model import TurnSettings
from app.services.workflows import WorkflowService
from app.store.database import Connection, Database
from app.store.store import Store
from app.telemetry.logs import stamp_records_with_request_ids
from app.telemetry.measured_llm import MeasuredLlm
from app.telemetry.metrics import Metrics
from app.telemetry.turns import TurnTelemetry

logger = logging.getLogger("tandem")


def create_app(
    settings: Settings,
    *,
    database: Database | None = None,
    clock: Clock = utc_now,
    llm: LlmClient | None = None,
) -> Litestar:
    """The Tandem application. ``clock`` and ``llm`` are for tests to inject; a
    ``database`` given is opened and closed by the caller (``app.serving``, or a test),
    else the app opens its own from ``settings``."""
    registry = Metrics()
    stamp_records_with_request_ids()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        connection = None
        db = database
        if db is None:
            connection = Connection(settings.mongodb_uri, settings.database_name)
            db = connection.database
        store = Store(db)
        await store.ensure_indexes()
        workflows = WorkflowService(
            store.workflows,
            clock,
            settings.definitions,
            LatestVersions(keep_seconds=settings.latest_version_ms / 1000),
        )
        app.state.store = store
        app.state.settings = settings
        app.state.workflows = workflows
        runs = RunServices.build(
            store.runs,
            workflows,
            clock,
            TurnSettings(
                lease=settings.lease,
                history_limit=settings.history_limit,
                max_message_bytes=settings.max_message_bytes,
                claim_poll=timedelta(milliseconds=settings.poll_ms),
                stream_keepalive=timedelta(seconds=settings.stream_keepalive_seconds),
                max_turn_recoveries=settings.max_turn_recoveries,
                max_stored_bytes=settings.max_stored_bytes,
                idempotency_lifetime=settings.idempotency_lifetime,
                run_cache_bytes=int(settings.run_cache_mb * 1024 * 1024),
                run_retention=settings.run_retention,
                evaluation_limits=settings.evaluation,
            ),
            MeasuredLlm(llm or build_llm_client(settings), registry),
            settings.sweep_interval_seconds,
            store.idempotency,
            TurnTelemetry(registry),
        )
        app.state.runs = runs
        if settings.examples_tenant is not None:
            await load_examples(workflows, settings.examples_tenant)
        runs.sweeper.start()
        loop_watch = asyncio.create_task(registry.watch_event_loop())

        runs.events_sweeper.start()
        try:
            yield
        finally:
            loop_watch.cancel()
            await runs.close()
            workflows.close()
            if connection is not None:
                await connection.close()

    return Litestar(
        route_handlers=[
            WorkflowController,
            ExecuteController,
            RunController,
            RunListController,
            healthz,
            readyz,
            metrics,
            *openapi_asset_routers(),
            playground_router(),
        ],
        lifespan=[lifespan],
        dependencies={
            "workflows": Provide(dependencies.provide_workflows, sync_to_thread=False),
            "runs": Provide(dependencies.provide_runs, sync_to_thread=False),
            "store": Provide(dependencies.provide_store, sync_to_thread=False),
        },
        middleware=[request_ids, DefineMiddleware(ApiKeyAuthentication, keys=settings.api_keys)],
        exception_handlers={
            TandemError: handle_tandem_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
        request_max_body_size=settings.max_body_bytes,
        cors_config=cors_config(settings.cors_origins),
        openapi_config=openapi_config(),
        plugins=[StructSchemaWithOurMeta()],
        debug=False,
        # Logging is set up once for the process (app.telemetry.logs), not by each app.
        logging_config=None,
        state=State({"metrics": registry}),
    )
