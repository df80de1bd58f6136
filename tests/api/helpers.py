import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import KEY_A

Client = AsyncTestClient[Any]


async def turn(
    client: Client,
    workflow_id: str,
    run_id: str | None = None,
    message: str | None = None,
    *,
    expect: int = 200,
    version: int | None = None,
    **body: Any,
) -> dict[str, Any]:
    """Post one turn and return the answer's JSON, checking its status."""
    if run_id is not None:
        body["run_id"] = run_id
    if message is not None:
        body.setdefault("run_input", {})["message"] = message
    params = {"version": version} if version is not None else None
    response = await client.post(f"/v1/workflows/{workflow_id}/execute", json=body, params=params)
    assert response.status_code == expect, response.text
    answer: dict[str, Any] = response.json()
    return answer


@asynccontextmanager
async def serving(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """One server process: ``app``'s lifespan, and a client whose requests run concurrently
    on the test's own event loop (Litestar's test client runs one at a time)."""
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers={"X-API-Key": KEY_A}
        ) as http:
            yield http


@asynccontextmanager
async def serving_http(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """One server process reached over a real socket, on the test's own event loop: unlike
    ``serving`` (whose transport hands over a response only once it is complete), a
    client reads a stream here message by message, as it is sent."""
    import socket

    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.005)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": KEY_A}, timeout=10
        ) as http:
            yield http
    finally:
        server.should_exit = True
        await task
