"""The application factory: wires the store, the services and the HTTP layer."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from litestar import Litestar
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.middleware import DefineMiddleware

from app.api import dependencies
from app.api.auth import ApiKeyAuthentication
from app.api.errors import handle_http_exception, handle_tandem_error, handle_unexpected
from app.api.health import healthz, readyz
from app.api.openapi import StructSchemaWithOurMeta, openapi_config
from app.api.runs import ExecuteController, RunController, RunListController
from app.api.workflows import WorkflowController
from app.clock import Clock, utc_now
from app.config import Settings
from app.engine.llm import LlmClient
from app.errors import TandemError
from app.examples import load_examples
from app.llm import build_llm_client
from app.playground import playground_router
from app.services.run_services import RunServices
from app.services.turn_model import TurnSettings
from app.services.workflows import WorkflowService
from app.store.database import Connection, Database
from app.store.store import Store

logger = logging.getLogger("tandem")


def create_app(
    settings: Settings,
    *,
    database: Database | None = None,
    clock: Clock = utc_now,
    llm: LlmClient | None = None,
) -> Litestar:
    """The Tandem application. ``database``, ``clock`` and ``llm`` are for tests to inject."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        connection = None
        db = database
        if db is None:
            connection = Connection(settings.mongodb_uri, settings.database_name)
            db = connection.database
        store = Store(db)
        await store.ensure_indexes()
        workflows = WorkflowService(store.workflows, clock, settings.definitions)
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
                evaluation_limits=settings.evaluation,
            ),
            llm or build_llm_client(settings),
            settings.sweep_interval_seconds,
        )
        app.state.runs = runs
        if settings.examples_tenant is not None:
            await load_examples(workflows, settings.examples_tenant)
        runs.sweeper.start()
        try:
            yield
        finally:
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
            playground_router(),
        ],
        lifespan=[lifespan],
        dependencies={
            "workflows": Provide(dependencies.provide_workflows, sync_to_thread=False),
            "runs": Provide(dependencies.provide_runs, sync_to_thread=False),
            "store": Provide(dependencies.provide_store, sync_to_thread=False),
        },
        middleware=[DefineMiddleware(ApiKeyAuthentication, keys=settings.api_keys)],
        exception_handlers={
            TandemError: handle_tandem_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
        request_max_body_size=settings.max_body_bytes,
        openapi_config=openapi_config(),
        plugins=[StructSchemaWithOurMeta()],
        debug=False,
    )
