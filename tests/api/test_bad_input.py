"""Every bad input gets a clear 4xx with {"detail", "code"}; nothing stored changes."""

from typing import Any
from urllib.parse import quote

import pytest

from tests.api.helpers import Client, turn
from tests.support import BOOKING, flow

ECHO = flow(
    ("ask", {"type": "input", "save_as": "said", "save_data_as": "payload", "next": "ask"}),
)


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    assert set(body) <= {"detail", "code", "errors"}
    return body


async def post_raw(client: Client, path: str, content: bytes) -> Any:
    return await client.post(path, content=content, headers={"Content-Type": "application/json"})


async def test_malformed_json_is_400(client: Client, booking_id: str) -> None:
    for path in (f"/v1/workflows/{booking_id}/execute", "/v1/workflows"):
        assert_error(await post_raw(client, path, b'{"run_id": '), 400, "invalid_json")


async def test_unknown_fields_are_400_with_their_path(client: Client, booking_id: str) -> None:
    body = assert_error(
        await client.post(
            f"/v1/workflows/{booking_id}/execute", json={"run_input": {"mesage": "hi"}}
        ),
        400,
        "validation_error",
    )
    assert "mesage" in body["detail"]
    assert_error(
        await client.post(f"/v1/workflows/{booking_id}/execute", json={"runid": "x"}),
        400,
        "validation_error",
    )
    assert_error(
        await client.post("/v1/workflows", json={"name": "x", "definition": {}, "owner": "me"}),
        400,
        "validation_error",
    )


async def test_wrong_types_are_400(client: Client, booking_id: str) -> None:
    path = f"/v1/workflows/{booking_id}/execute"
    for body in ([], "text", {"inputs": [1]}, {"run_input": {"message": 5}}, {"run_input": "hi"}):
        assert_error(await client.post(path, json=body), 400, "validation_error")
    assert_error(
        await client.post("/v1/workflows", json={"definition": {}}), 400, "validation_error"
    )


async def test_malformed_ids_are_400_and_never_reach_mongodb(
    client: Client, booking_id: str
) -> None:
    run_id = (await turn(client, booking_id))["run_id"]
    path = f"/v1/workflows/{booking_id}/execute"
    for bad in ({"$gt": ""}, {"$ne": None}, ["x"], 7):
        assert_error(await client.post(path, json={"run_id": bad}), 400, "validation_error")
    for bad in ("xyz", "65f0c0ffee0000000000abc", "65f0c0ffee0000000000abcdX", "$gt"):
        assert_error(await client.post(path, json={"run_id": bad}), 400, "invalid_id")
    for bad_path in (
        "/v1/workflows/not-an-id",
        "/v1/workflows/not-an-id/versions/0",
        "/v1/runs/not-an-id",
        "/v1/runs/not-an-id/events",
        "/v1/workflows?cursor=zzz",
    ):
        assert_error(await client.get(bad_path), 400, "invalid_id")
    assert_error(await client.post("/v1/workflows/nope/execute", json={}), 400, "invalid_id")
    assert (await client.get(f"/v1/runs/{run_id}")).json()["turn"] == 1


async def test_unknown_ids_are_404(client: Client, booking_id: str) -> None:
    missing = "65f0c0ffee0000000000abcd"
    assert_error(await client.get(f"/v1/runs/{missing}"), 404, "not_found")
    assert_error(await client.get(f"/v1/runs/{missing}/events"), 404, "not_found")
    assert_error(await client.post(f"/v1/workflows/{missing}/execute", json={}), 404, "not_found")
    await turn(client, booking_id, missing, "hi", expect=404)


async def test_unknown_command_is_400_and_changes_nothing(client: Client, booking_id: str) -> None:
    run_id = (await turn(client, booking_id))["run_id"]
    body = await turn(client, booking_id, run_id, run_input={"command": "pause"}, expect=400)
    assert body["code"] == "unknown_command"
    run = (await client.get(f"/v1/runs/{run_id}")).json()
    assert run["turn"] == 1 and run["status"] == "waiting_for_user_input"


async def test_stop_without_a_run_id_is_400(client: Client, booking_id: str) -> None:
    assert (await turn(client, booking_id, run_input={"command": "stop"}, expect=400))[
        "code"
    ] == "bad_request"


async def test_odd_keys_in_inputs_and_data_round_trip(client: Client) -> None:
    created = await client.post("/v1/workflows", json={"name": "echo", "definition": ECHO})
    workflow_id = created.json()["workflow_id"]
    inputs = {"$where": "1", "a.b": {"$gt": [{"c.d": 1}]}, "~": "tilde"}
    run_id = (await turn(client, workflow_id, inputs=inputs))["run_id"]
    data = {"$set": {"x.y": True}, "": None}
    await turn(client, workflow_id, run_id, "hi", run_input={"message": "hi", "data": data})
    variables = (await client.get(f"/v1/runs/{run_id}")).json()["variables"]
    assert variables == {**inputs, "said": "hi", "payload": data}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("inputs", {"n": 2**64}),
        ("data", {"n": -(2**70)}),
        ("data", {"deep": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}),
        ("inputs", {"history": []}),
    ],
)
async def test_values_mongodb_cannot_store_are_400(
    client: Client, booking_id: str, field: str, value: Any
) -> None:
    body: dict[str, Any] = (
        {"inputs": value} if field == "inputs" else {"run_input": {"data": value}}
    )
    response = await client.post(f"/v1/workflows/{booking_id}/execute", json=body)
    assert_error(response, 400, "invalid_input")


async def test_lone_surrogates_are_invalid_json(client: Client, booking_id: str) -> None:
    path = f"/v1/workflows/{booking_id}/execute"
    assert_error(
        await post_raw(client, path, b'{"run_input": {"message": "\\ud800"}}'), 400, "invalid_json"
    )
    assert_error(await post_raw(client, path, b'{"inputs": {"\\udfff": 1}}'), 400, "invalid_json")
    definition = b'{"name": "x", "definition": {"start": "e", "nodes": {"e": {"type": "fail", "error": "\\ud800"}}}}'
    assert_error(await post_raw(client, "/v1/workflows", definition), 400, "invalid_json")


async def test_a_body_over_1_mib_is_413(client: Client, booking_id: str) -> None:
    big = b'{"inputs": {"blob": "' + b"x" * (1024 * 1024) + b'"}}'
    assert_error(
        await post_raw(client, f"/v1/workflows/{booking_id}/execute", big), 413, "payload_too_large"
    )


async def test_a_message_over_32_kib_is_400_and_changes_nothing(
    client: Client, booking_id: str
) -> None:
    run_id = (await turn(client, booking_id))["run_id"]
    body = await turn(client, booking_id, run_id, "é" * (16 * 1024 + 1), expect=400)
    assert body["code"] == "message_too_large"
    await turn(client, booking_id, run_id, "a" * (32 * 1024))  # exactly the limit is fine
    events = (await client.get(f"/v1/runs/{run_id}/events")).json()["events"]
    assert {e["turn"] for e in events} == {1, 2}


async def test_bad_query_values_are_400(client: Client, booking_id: str) -> None:
    run_id = (await turn(client, booking_id))["run_id"]
    for params in ({"version": "abc"}, {"version": -1}):
        response = await client.post(f"/v1/workflows/{booking_id}/execute", json={}, params=params)
        assert_error(response, 400, "validation_error")
        # Without a body (a valid first turn), the only error is still the version's.
        response = await client.post(f"/v1/workflows/{booking_id}/execute", params=params)
        errors = assert_error(response, 400, "validation_error")["errors"]
        assert [error["path"] for error in errors] == ["version"]
    assert_error(
        await client.get(f"/v1/runs/{run_id}/events", params={"turn": 0}), 400, "validation_error"
    )


async def test_missing_or_unknown_keys_are_401(client: Client, booking_id: str) -> None:
    del client.headers["X-API-Key"]
    assert_error(await client.get("/v1/workflows"), 401, "unauthorized")
    assert_error(
        await client.get("/v1/workflows", headers={"X-API-Key": "guess"}), 401, "unauthorized"
    )
    assert_error(
        await client.get("/v1/workflows", headers={"Authorization": "Bearer guess"}),
        401,
        "unauthorized",
    )
    assert_error(
        await client.get("/v1/workflows", headers={"Authorization": "Basic a2V5LWFjbWU="}),
        401,
        "unauthorized",
    )
    ok = await client.get(
        f"/v1/workflows/{booking_id}", headers={"Authorization": "Bearer key-acme"}
    )
    assert ok.status_code == 200


async def test_unknown_routes_and_methods_answer_the_error_body(client: Client) -> None:
    assert_error(await client.get("/v1/nothing-here"), 404, "not_found")
    assert_error(await client.delete("/v1/workflows"), 405, "method_not_allowed")


async def test_an_empty_body_starts_a_run(client: Client, booking_id: str) -> None:
    response = await client.post(f"/v1/workflows/{booking_id}/execute")
    assert response.status_code == 200 and response.json()["turn"] == 1


# Forms an id regular expression anchored with ``$`` alone, or a lenient parser, lets through.
NEAR_MISS_IDS = [
    "65f0c0ffee0000000000abcd\n",
    "65f0c0ffee0000000000abcd\r\n",
    " 65f0c0ffee0000000000abcd",
    "65f0c0ffee0000000000abcd ",
    "65f0c0ffee0000000000abcd0",
    "0x65f0c0ffee0000000000ab",
    "\uff16\uff15f0c0ffee0000000000abcd",  # fullwidth digits
    "",
]


@pytest.mark.parametrize("bad", NEAR_MISS_IDS)
async def test_near_miss_ids_are_400_in_every_slot(
    client: Client, booking_id: str, bad: str
) -> None:
    run_id = (await turn(client, booking_id))["run_id"]
    before = (await client.get(f"/v1/runs/{run_id}")).json()
    escaped = quote(bad, safe="")
    in_path = [
        ("GET", f"/v1/runs/{escaped}", None, "run_id"),
        ("GET", f"/v1/runs/{escaped}/events", None, "run_id"),
        ("GET", f"/v1/workflows/{escaped}", None, "workflow_id"),
        ("GET", f"/v1/workflows/{escaped}/versions/0", None, "workflow_id"),
        ("POST", f"/v1/workflows/{escaped}/versions", {"definition": BOOKING}, "workflow_id"),
        ("POST", f"/v1/workflows/{escaped}/execute", {}, "workflow_id"),
    ]
    elsewhere = [
        ("POST", f"/v1/workflows/{booking_id}/execute", {"run_id": bad}, "run_id"),
        ("POST", f"/v1/workflows/{booking_id}/execute?version=0", {"run_id": bad}, "run_id"),
        ("GET", f"/v1/workflows?cursor={escaped}", None, "cursor"),
    ]
    # An empty path segment makes another route, not an id.
    for method, path, body, name in (in_path if bad else []) + elsewhere:
        response = await client.request(method, path, json=body)
        answer = assert_error(response, 400, "invalid_id")
        assert answer["errors"] == [{"path": name, "message": "must be 24 hexadecimal digits"}], (
            method,
            path,
        )
    assert (await client.get(f"/v1/runs/{run_id}")).json() == before
    workflow = (await client.get(f"/v1/workflows/{booking_id}")).json()
    assert workflow["latest_version"] == 0


async def test_ids_are_read_in_either_case_and_answered_lowercase(
    client: Client, booking_id: str
) -> None:
    run_id = (await turn(client, booking_id))["run_id"]
    upper_run, upper_workflow = run_id.upper(), booking_id.upper()
    assert (await client.get(f"/v1/runs/{upper_run}")).json()["run_id"] == run_id
    assert (await client.get(f"/v1/runs/{upper_run}/events")).json()["run_id"] == run_id
    assert (await client.get(f"/v1/workflows/{upper_workflow}")).json()["workflow_id"] == booking_id
    answer = await turn(client, upper_workflow, upper_run, "Ada")
    assert (answer["run_id"], answer["workflow_id"]) == (run_id, booking_id)


def target_url(target: str, booking_id: str) -> str:
    """Where a body goes: a turn, a new workflow, or a new version of the booking one."""
    return {
        "execute": f"/v1/workflows/{booking_id}/execute",
        "create": "/v1/workflows",
        "publish": f"/v1/workflows/{booking_id}/versions",
    }[target]


@pytest.mark.parametrize(
    ("target", "body", "path"),
    [
        ("execute", b'{"inputs": {"a": "\xff"}}', "inputs.a"),
        ("execute", b'{"run_input": {"message": "caf\xe9"}}', "run_input.message"),
        ("execute", b'{"run_input": {"data": {"x": [1, "\xc3"]}}}', "run_input.data.x[1]"),
        ("execute", b'{"inputs": {"\xff": 1}}', "inputs"),
        ("create", b'{"name": "\xff", "definition": {}}', "name"),
        ("create", b'{"name": "x", "definition": {"start": "\xed\xa0\x80"}}', "definition.start"),
        (
            "publish",
            b'{"definition": {"nodes": {"e": {"type": "fail", "error": "\xff"}}}}',
            "definition.nodes.e.error",
        ),
    ],
)
async def test_invalid_utf8_in_a_string_is_invalid_json_with_its_path(
    client: Client, booking_id: str, target: str, body: bytes, path: str
) -> None:
    run_id = (await turn(client, booking_id))["run_id"]
    before = (await client.get(f"/v1/runs/{run_id}")).json()
    url = target_url(target, booking_id)
    if target == "execute" and b"run_input" in body:
        body = body.replace(b"{", b'{"run_id": "' + run_id.encode() + b'", ', 1)
    answer = assert_error(await post_raw(client, url, body), 400, "invalid_json")
    assert "UTF-8" in answer["detail"]
    assert [error["path"] for error in answer["errors"]] == [path]
    assert (await client.get(f"/v1/runs/{run_id}")).json() == before
    assert (await client.get("/v1/workflows")).json()["items"][0]["latest_version"] == 0
    assert len((await client.get("/v1/workflows")).json()["items"]) == 1


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("depth", [100, 1_000, 10_000, 100_000])
@pytest.mark.parametrize(
    ("target", "make_body", "status", "code", "path"),
    [
        ("execute", lambda deep: deep, 400, "invalid_input", "body"),
        (
            "execute",
            lambda deep: b'{"inputs": {"a": ' + deep + b"}}",
            400,
            "invalid_input",
            "inputs",
        ),
        (
            "execute",
            lambda deep: b'{"run_input": {"data": ' + deep + b"}}",
            400,
            "invalid_input",
            "run_input.data",
        ),
        (
            "create",
            lambda deep: b'{"name": "x", "definition": {"nodes": ' + deep + b"}}",
            422,
            "invalid_definition",
            "definition",
        ),
        (
            "publish",
            lambda deep: b'{"definition": {"start": "a", "nodes": {"a": ' + deep + b"}}}",
            422,
            "invalid_definition",
            "definition",
        ),
    ],
)
async def test_json_nested_beyond_the_limit_is_refused_at_its_field(
    client: Client,
    booking_id: str,
    depth: int,
    target: str,
    make_body: Any,
    status: int,
    code: str,
    path: str,
) -> None:
    """Nested 100 levels or 100,000, a value gets the same answer: too deep for its field."""
    run_id = (await turn(client, booking_id))["run_id"]
    before = (await client.get(f"/v1/runs/{run_id}")).json()
    url = target_url(target, booking_id)
    response = await post_raw(client, url, make_body(nested(depth)))
    if depth == 100 and path == "body":
        # Shallow enough to decode: a list is simply not the object a turn takes.
        assert_error(response, 400, "validation_error")
        return
    answer = assert_error(response, status, code)
    assert answer["errors"] == [
        {"path": path, "message": "the value is nested deeper than 32 levels"}
    ]
    assert (await client.get(f"/v1/runs/{run_id}")).json() == before
    workflows = (await client.get("/v1/workflows")).json()["items"]
    assert [w["latest_version"] for w in workflows] == [0]


async def test_a_deep_body_on_a_later_turn_changes_nothing(client: Client, booking_id: str) -> None:
    run_id = (await turn(client, booking_id))["run_id"]
    before = (await client.get(f"/v1/runs/{run_id}")).json()
    body = b'{"run_id": "' + run_id.encode() + b'", "run_input": {"data": ' + nested(5_000) + b"}}"
    response = await post_raw(client, f"/v1/workflows/{booking_id}/execute", body)
    assert assert_error(response, 400, "invalid_input")["errors"][0]["path"] == "run_input.data"
    assert (await client.get(f"/v1/runs/{run_id}")).json() == before
    await turn(client, booking_id, run_id, "Ada")  # the run still takes its next turn


@pytest.mark.parametrize(
    ("method", "url", "body", "path", "message"),
    [
        ("GET", "/v1/runs/{run}/events?turn=0", None, "turn", "Expected `int` >= 1"),
        ("GET", "/v1/runs/{run}/events?turn=two", None, "turn", "Expected `int | null`, got `str`"),
        (
            "POST",
            "/v1/workflows/{workflow}/execute?version=-1",
            {},
            "version",
            "Expected `int` >= 0",
        ),
        ("GET", "/v1/workflows?limit=101", None, "limit", "Expected `int` <= 100"),
        # BSON cannot encode these: on MongoDB they would fail inside the query.
        ("GET", "/v1/workflows/{workflow}/versions/9223372036854775808", None, "version", None),
        ("GET", "/v1/workflows/{workflow}/versions/-1", None, "version", "Expected `int` >= 0"),
        ("GET", "/v1/runs/{run}/events?turn=9223372036854775808", None, "turn", None),
        (
            "POST",
            "/v1/workflows/{workflow}/execute?version=99999999999999999999",
            {},
            "version",
            None,
        ),
        ("POST", "/v1/workflows", {"definition": {}}, "name", "is required"),
        ("POST", "/v1/workflows", {"name": "x"}, "definition", "is required"),
        ("POST", "/v1/workflows", {"name": "", "definition": {}}, "name", None),
        ("POST", "/v1/workflows", {"name": "x", "definition": {}, "owner": 1}, "owner", None),
        ("POST", "/v1/workflows/{workflow}/versions", {}, "definition", "is required"),
        (
            "POST",
            "/v1/workflows/{workflow}/execute",
            {"run_input": {"colour": 1}},
            "run_input.colour",
            "is not a known field",
        ),
        (
            "POST",
            "/v1/workflows/{workflow}/execute",
            {"run_input": {"message": 1}},
            "run_input.message",
            None,
        ),
        ("POST", "/v1/workflows/{workflow}/execute", {"runid": "x"}, "runid", None),
        ("POST", "/v1/workflows/{workflow}/execute", {"inputs": [1]}, "inputs", None),
        ("POST", "/v1/workflows/{workflow}/execute", [], "body", None),
    ],
)
async def test_validation_errors_name_the_field_as_the_client_wrote_it(
    client: Client,
    booking_id: str,
    method: str,
    url: str,
    body: Any,
    path: str,
    message: str | None,
) -> None:
    run_id = (await turn(client, booking_id))["run_id"]
    before = (await client.get(f"/v1/runs/{run_id}")).json()
    response = await client.request(method, url.format(run=run_id, workflow=booking_id), json=body)
    answer = assert_error(response, 400, "validation_error")
    assert [error["path"] for error in answer["errors"]] == [path]
    if message is not None:
        assert answer["errors"][0]["message"] == message
    assert f"{path}: " in answer["detail"]
    assert (await client.get(f"/v1/runs/{run_id}")).json() == before


async def test_a_deep_field_a_turn_does_not_take_is_not_a_definition(
    client: Client, booking_id: str
) -> None:
    body = b'{"definition": ' + nested(2_000) + b"}"
    response = await post_raw(client, f"/v1/workflows/{booking_id}/execute", body)
    assert assert_error(response, 400, "invalid_input")["errors"][0]["path"] == "definition"
