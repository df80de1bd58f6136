from typing import Any

from litestar.testing import AsyncTestClient

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
