from typing import Any

from tests.api.helpers import Client


async def test_openapi_documents_security_and_every_status(client: Client) -> None:
    del client.headers["X-API-Key"]  # the schema is public
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    spec: dict[str, Any] = response.json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {"type": "apiKey", "name": "X-API-Key", "in": "header"}
    assert schemes["Bearer"]["scheme"] == "bearer"
    paths = spec["paths"]
    execute = paths["/v1/workflows/{workflow_id}/execute"]["post"]
    assert {"200", "400", "401", "404", "409", "413"} <= set(execute["responses"])
    create = paths["/v1/workflows"]["post"]
    assert {"201", "400", "401", "413", "422"} <= set(create["responses"])
    assert {"200", "400", "401", "404"} <= set(paths["/v1/runs/{run_id}"]["get"]["responses"])
    assert {"200", "400", "401", "404"} <= set(
        paths["/v1/runs/{run_id}/events"]["get"]["responses"]
    )
    assert {"ApiKey": []} in execute["security"] and {"Bearer": []} in execute["security"]
    assert "security" not in paths["/healthz"]["get"]
    error_schema = execute["responses"]["409"]["content"]["application/json"]["schema"]
    assert error_schema["$ref"].endswith("ErrorBody")


async def test_health_and_readiness_are_public(client: Client) -> None:
    del client.headers["X-API-Key"]
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}


async def test_readiness_fails_with_503_when_mongodb_does_not_answer(
    client: Client, database: Any
) -> None:
    async def unreachable(*_: Any) -> None:
        raise ConnectionError("no route to host")

    database.command = unreachable
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["code"] == "unavailable"
