import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from app.config import Settings
from app.server import create_app
from app.store.database import Database
from tests.mongo_double import RunningDouble, running_in_thread
from tests.support import (
    BOOKING,
    FakeClock,
    YieldingDatabase,
    database_backends,
    fresh_database,
)

KEY_A, TENANT_A = "key-acme", "acme"
KEY_B, TENANT_B = "key-globex", "globex"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> Settings:
    # Tests of a claimed turn in flight (held, crashed, stopped) mark themselves
    # ``claiming``: in one process, a later blocking turn would otherwise run on the run
    # this process cached, unclaimed (tests/api/test_cached_turn.py).
    claiming = request.node.get_closest_marker("claiming") is not None
    return Settings(
        api_keys={KEY_A: TENANT_A, KEY_B: TENANT_B}, run_cache_mb=0 if claiming else 64.0
    )


@pytest.fixture(scope="session")
def mongo_double() -> Iterator[RunningDouble]:
    """One wire-level MongoDB double (``tests/mongo_double``) for the whole session, on a
    thread of this process; each test uses a database of its own on it."""
    with running_in_thread() as double:
        yield double


@pytest.fixture(params=database_backends())
async def database_per_backend(request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    """A fresh database on each backend of ``database_backends``: a test using it runs once
    on the embedded store and once through PyMongo on the wire double (or once on the
    MongoDB of MONGODB_URI)."""
    uri = request.getfixturevalue("mongo_double").uri if request.param == "wire" else None
    async with fresh_database(uri) as database:
        yield database


@pytest.fixture
async def database() -> AsyncIterator[YieldingDatabase]:
    async with fresh_database() as raw:
        yield YieldingDatabase(raw)


@pytest.fixture
async def client(
    settings: Settings, database: YieldingDatabase, clock: FakeClock
) -> AsyncIterator[AsyncTestClient[Any]]:
    uri = os.environ.get("MONGODB_URI")
    if uri:
        # Litestar's test client runs the app on an event loop of its own, and PyMongo's
        # client belongs to the loop that made it: the app opens its own, on the test's
        # database.
        own = msgspec.structs.replace(settings, mongodb_uri=uri, database_name=database.name)
        app = create_app(own, clock=clock)
    else:
        app = create_app(settings, database=database, clock=clock)  # type: ignore[arg-type]
    async with AsyncTestClient(app=app) as test_client:
        test_client.headers["X-API-Key"] = KEY_A
        yield test_client


@pytest.fixture
def racing(
    settings: Settings, database: YieldingDatabase, clock: FakeClock
) -> Callable[[], AbstractAsyncContextManager[httpx.AsyncClient]]:
    """Opens a client whose requests run concurrently on the test's own event loop.

    Litestar's test client runs the app in a blocking portal, one request at a time, so
    races are posted through httpx's ASGI transport instead. Used as ``async with
    racing() as client`` inside the test, so that the app's lifespan opens and closes
    in one task.
    """

    @asynccontextmanager
    async def open_client() -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(settings, database=database, clock=clock)  # type: ignore[arg-type]
        async with app.lifespan():
            transport = httpx.ASGITransport(app=app)
            headers = {"X-API-Key": KEY_A}
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver", headers=headers
            ) as racing_client:
                yield racing_client

    return open_client


@pytest.fixture
async def booking_id(client: AsyncTestClient[Any]) -> str:
    response = await client.post("/v1/workflows", json={"name": "Booking", "definition": BOOKING})
    assert response.status_code == 201, response.text
    workflow_id: str = response.json()["workflow_id"]
    return workflow_id
