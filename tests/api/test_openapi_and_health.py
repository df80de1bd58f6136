from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from app.api.errors import EXAMPLES
from app.api.schemas import ERROR_CODES, ID_PATTERN_IN, ID_PATTERN_OUT
from app.config import Settings
from app.server import create_app
from app.store.embedded import open_embedded_client
from tests.api.helpers import Client, serving, turn
from tests.support import FakeClock, YieldingDatabase

Spec = dict[str, Any]


@pytest.fixture
def clock() -> FakeClock:
    # The Idempotency-Key example needs a record that the TTL index does not delete at
    # once: its expiry must be ahead of the database's own clock.
    return FakeClock.from_real_time()


@pytest.fixture
async def spec(client: Client) -> Spec:
    response = await client.get("/schema/openapi.json", headers={"X-API-Key": ""})
    assert response.status_code == 200  # the document is public
    document: Spec = response.json()
    return document


def operations(spec: Spec) -> list[tuple[str, str, Spec]]:
    return [
        (method.upper(), path, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    ]


def resolve(spec: Spec, schema: Spec) -> Spec:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def referenced_schemas(spec: Spec, schema: Any, seen: set[str] | None = None) -> set[str]:
    """The names of the component schemas that ``schema`` uses, however deep."""
    seen = set() if seen is None else seen
    if isinstance(schema, dict):
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[1]
            if name not in seen:
                seen.add(name)
                referenced_schemas(spec, spec["components"]["schemas"][name], seen)
        for value in schema.values():
            referenced_schemas(spec, value, seen)
    elif isinstance(schema, list):
        for value in schema:
            referenced_schemas(spec, value, seen)
    return seen


async def test_openapi_documents_security_and_every_status(spec: Spec) -> None:
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


async def test_ids_and_bounds_are_documented_in_every_slot(spec: Spec) -> None:
    parameters = {
        (method, path, parameter["name"]): parameter["schema"]
        for method, path, operation in operations(spec)
        for parameter in operation.get("parameters", [])
    }
    ids = {key: schema for key, schema in parameters.items() if key[2].endswith("_id")}
    assert len(ids) == 11
    assert all(schema["pattern"] == ID_PATTERN_IN for schema in ids.values())
    for listing in ("/v1/workflows", "/v1/runs", "/v1/workflows/{workflow_id}/runs"):
        assert parameters["GET", listing, "cursor"]["pattern"] == ID_PATTERN_IN
        limit = parameters["GET", listing, "limit"]
        assert (limit["minimum"], limit["maximum"]) == (1, 100)
    for listing in ("/v1/runs", "/v1/workflows/{workflow_id}/runs"):
        for name in ("created_after", "created_before"):
            assert parameters["GET", listing, name]["format"] == "date-time"
    int64 = 2**63 - 1
    assert parameters["GET", "/v1/workflows/{workflow_id}/versions/{version}", "version"] == {
        "type": "integer",
        "minimum": 0,
        "maximum": int64,
    }
    version = parameters["POST", "/v1/workflows/{workflow_id}/execute", "version"]
    assert (version["minimum"], version["maximum"]) == (0, int64)
    turn = parameters["GET", "/v1/runs/{run_id}/events", "turn"]
    assert (turn["minimum"], turn["maximum"]) == (1, int64)
    schemas = spec["components"]["schemas"]
    assert schemas["ExecuteRequest"]["properties"]["run_id"]["pattern"] == ID_PATTERN_IN
    names = (
        "TurnAnswer",
        "RunDetail",
        "RunSummary",
        "RunEvents",
        "WorkflowCreated",
        "VersionDetail",
    )
    for name in names:
        answer_ids = {k: v for k, v in schemas[name]["properties"].items() if k.endswith("_id")}
        assert answer_ids and all(v["pattern"] == ID_PATTERN_OUT for v in answer_ids.values())


async def test_request_bodies_refuse_unknown_fields_in_the_document_too(spec: Spec) -> None:
    bodies = [
        operation["requestBody"]["content"]["application/json"]["schema"]
        for _, _, operation in operations(spec)
        if "requestBody" in operation
    ]
    assert len(bodies) == 3
    names = set().union(*(referenced_schemas(spec, body) for body in bodies))
    assert {"ExecuteRequest", "RunInput", "CreateWorkflowRequest", "Definition"} <= names
    assert {"InputNode", "InputValidation", "SwitchCase", "Limits"} <= names
    for name in names:
        assert spec["components"]["schemas"][name]["additionalProperties"] is False, name


async def test_the_execute_body_is_optional(spec: Spec, client: Client, booking_id: str) -> None:
    execute = spec["paths"]["/v1/workflows/{workflow_id}/execute"]["post"]
    assert execute["requestBody"]["required"] is False
    response = await client.post(f"/v1/workflows/{booking_id}/execute")
    assert response.status_code == 200 and response.json()["turn"] == 1


async def test_a_definition_is_documented_by_the_workflow_language(spec: Spec) -> None:
    schemas = spec["components"]["schemas"]
    for holder in ("CreateWorkflowRequest", "PublishVersionRequest", "VersionDetail"):
        definition = schemas[holder]["properties"]["definition"]
        assert definition["allOf"] == [{"$ref": "#/components/schemas/Definition"}]
    nodes = schemas["Definition"]["properties"]["nodes"]["additionalProperties"]["oneOf"]
    types = {resolve(spec, node)["properties"]["type"]["const"] for node in nodes}
    assert types == {
        "message",
        "input",
        "pause",
        "switch",
        "set",
        "llm",
        "show_state",
        "end",
        "fail",
    }


async def test_every_error_answer_lists_its_codes_with_a_real_example(spec: Spec) -> None:
    code_schema = spec["components"]["schemas"]["ErrorBody"]["properties"]["code"]
    assert set(code_schema["enum"]) == set(ERROR_CODES)
    documented = 0
    for method, path, operation in operations(spec):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            content = response["content"]["application/json"]
            assert content["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
            assert set(content["examples"]), (method, path, status)
            for code, example in content["examples"].items():
                assert ERROR_CODES[code][0] == int(status), (method, path, code)
                assert f"`{code}`" in response["description"]
                assert example["value"]["code"] == code
                documented += 1
    assert documented >= 40


async def test_the_execute_route_declares_its_event_stream(spec: Spec) -> None:
    answer = spec["paths"]["/v1/workflows/{workflow_id}/execute"]["post"]["responses"]["200"]
    assert answer["content"]["application/json"]["schema"]["$ref"].endswith("TurnAnswer")
    stream = answer["content"]["text/event-stream"]
    assert stream["schema"]["type"] == "string"
    assert "turn_result" in stream["schema"]["description"]
    example = next(iter(stream["examples"].values()))["value"]
    assert "event: turn_result\r\ndata: {" in example


async def test_the_event_stream_is_written_as_documented(
    spec: Spec, client: Client, booking_id: str
) -> None:
    def fields(stream: str) -> list[list[str]]:
        messages = [message for message in stream.split("\r\n\r\n") if message]
        return [[line.split(": ", 1)[0] for line in m.split("\r\n")] for m in messages]

    answer = spec["paths"]["/v1/workflows/{workflow_id}/execute"]["post"]["responses"]["200"]
    example = next(iter(answer["content"]["text/event-stream"]["examples"].values()))["value"]
    response = await client.post(
        f"/v1/workflows/{booking_id}/execute", headers={"Accept": "text/event-stream"}
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    documented, written = fields(example), fields(response.text)
    assert documented[0] == written[0] == ["id", "event", "data"]
    assert documented[-1] == written[-1] == ["event", "data"]
    assert response.text.rsplit("event: ", 1)[1].startswith("turn_result\r\n")


@asynccontextmanager
async def mongodb_down(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A server whose MongoDB stops answering once it has started (always the embedded
    store, so that it can be made to fail whatever MONGODB_URI the tests use)."""
    database = YieldingDatabase(open_embedded_client()["mongodb_down"])
    app = create_app(settings, database=database)  # type: ignore[arg-type]
    async with serving(app) as http:

        async def unreachable(*_: Any) -> None:
            raise ConnectionError("no route to host")

        database.command = unreachable  # type: ignore[method-assign]
        yield http


async def test_the_examples_are_what_the_server_answers(
    client: Client, booking_id: str, settings: Settings
) -> None:
    """Each documented example, provoked for real (ids aside)."""
    execute = f"/v1/workflows/{booking_id}/execute"
    json_headers = {"Content-Type": "application/json"}
    run_id = (await turn(client, booking_id))["run_id"]
    await turn(client, booking_id, run_id, run_input={"command": "stop"})
    keyed = {"Idempotency-Key": "order-1"}
    assert (await client.post(execute, json={}, headers=keyed)).status_code == 200

    provoked = {
        "invalid_json": client.post(
            execute, content=b'{"inputs":{"a":"\xff"}}', headers=json_headers
        ),
        "validation_error": client.post(execute, json={"run_input": {"colour": 1}}),
        "invalid_id": client.post(execute, json={"run_id": "65f0c0ffee"}),
        "invalid_input": client.post(
            execute,
            content=b'{"inputs": {"a": ' + b"[" * 40 + b"]" * 40 + b"}}",
            headers=json_headers,
        ),
        "message_too_large": client.post(execute, json={"run_input": {"message": "x" * 40_000}}),
        "unknown_command": client.post(execute, json={"run_input": {"command": "pause"}}),
        "bad_request": client.post(execute, json={"run_input": {"command": "stop"}}),
        "unauthorized": client.get("/v1/workflows", headers={"X-API-Key": "guess"}),
        "not_found": client.get("/v1/runs/65f0c0ffee0000000000abcd"),
        "run_terminal": client.post(execute, json={"run_id": run_id}),
        "payload_too_large": client.post(
            execute, content=b" " * (1024 * 1024 + 1), headers=json_headers
        ),
        "invalid_definition": client.post(
            "/v1/workflows",
            json={
                "name": "x",
                "definition": {"start": "greet", "nodes": {"done": {"type": "end"}}},
            },
        ),
        "idempotency_key_reused": client.post(execute, json={"inputs": {"a": 1}}, headers=keyed),
    }
    for code, request in provoked.items():
        response = await request
        example = EXAMPLES[code]
        assert response.status_code == ERROR_CODES[code][0], response.text
        answer = response.json()
        answer["detail"] = answer["detail"].replace(run_id, "65f0c0ffee0000000000abcd")
        answer["detail"] = answer["detail"].replace("cancelled", "completed")
        expected = {"detail": example.detail, "code": code}
        if example.errors:
            expected["errors"] = [{"path": e.path, "message": e.message} for e in example.errors]
        assert answer == expected, code
    async with mongodb_down(settings) as down:
        unavailable = await down.get("/readyz")
    assert unavailable.status_code == 503
    assert unavailable.json() == {"detail": EXAMPLES["unavailable"].detail, "code": "unavailable"}
    # Races, provoked in test_concurrency.py and test_idempotency.py.
    unprovoked = {"turn_in_progress", "request_in_progress", "unavailable"}
    assert set(EXAMPLES) == set(provoked) | unprovoked


async def test_every_error_class_has_a_documented_code() -> None:
    import app.server  # noqa: F401  (every module that defines an error is imported)
    from app.errors import TandemError

    def subclasses(cls: type) -> list[type]:
        return [cls, *(sub for direct in cls.__subclasses__() for sub in subclasses(direct))]

    for error_class in subclasses(TandemError):
        assert error_class.code in ERROR_CODES, error_class
        assert ERROR_CODES[error_class.code][0] == error_class.status_code, error_class


async def test_health_and_readiness_are_public(client: Client) -> None:
    del client.headers["X-API-Key"]
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}


async def test_readiness_fails_with_503_when_mongodb_does_not_answer(settings: Settings) -> None:
    async with mongodb_down(settings) as down:
        response = await down.get("/readyz")
    assert response.status_code == 503
    assert response.json()["code"] == "unavailable"
