from typing import Any

from litestar.testing import AsyncTestClient

from tests.conftest import KEY_B
from tests.support import BOOKING, flow

Client = AsyncTestClient[Any]
SIMPLE = flow(("done", {"type": "end", "output": {"answer": "42"}}))


async def test_create_answers_201_with_version_0(client: Client) -> None:
    response = await client.post(
        "/v1/workflows", json={"name": "Booking", "description": "Tables", "definition": BOOKING}
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"workflow_id", "name", "version", "created_at"}
    assert body["version"] == 0 and body["name"] == "Booking"
    assert len(body["workflow_id"]) == 24 and body["created_at"].endswith("Z")


async def test_versions_are_numbered_and_immutable(client: Client, booking_id: str) -> None:
    for expected in (1, 2):
        response = await client.post(
            f"/v1/workflows/{booking_id}/versions", json={"definition": SIMPLE}
        )
        assert response.status_code == 201
        assert response.json() == {"workflow_id": booking_id, "version": expected}
    detail = (await client.get(f"/v1/workflows/{booking_id}")).json()
    assert detail["latest_version"] == 2
    assert [v["version"] for v in detail["versions"]] == [0, 1, 2]
    assert detail["description"] is None
    v0 = (await client.get(f"/v1/workflows/{booking_id}/versions/0")).json()
    assert v0["definition"] == BOOKING
    v2 = (await client.get(f"/v1/workflows/{booking_id}/versions/2")).json()
    assert v2["definition"] == SIMPLE and v2["version"] == 2


async def test_an_invalid_definition_is_refused_with_every_problem(client: Client) -> None:
    definition = flow(
        ("ask", {"type": "input", "save_as": "x", "next": "nowhere"}),
        ("greet", {"type": "message", "text": "{{ oops", "next": "ask"}),
    )
    response = await client.post("/v1/workflows", json={"name": "Bad", "definition": definition})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_definition"
    paths = {error["path"] for error in body["errors"]}
    assert {"nodes.ask.next", "nodes.greet.text", "nodes.greet"} <= paths
    assert (await client.get("/v1/workflows")).json()["items"] == []


async def test_an_invalid_new_version_leaves_the_workflow_as_it_was(
    client: Client, booking_id: str
) -> None:
    response = await client.post(
        f"/v1/workflows/{booking_id}/versions", json={"definition": "nope"}
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [{"path": "definition", "message": "must be an object"}]
    assert (await client.get(f"/v1/workflows/{booking_id}")).json()["latest_version"] == 0


async def test_list_pages_newest_first(client: Client) -> None:
    ids = []
    for index in range(5):
        response = await client.post(
            "/v1/workflows", json={"name": f"w{index}", "definition": SIMPLE}
        )
        ids.append(response.json()["workflow_id"])
    first = (await client.get("/v1/workflows", params={"limit": 2})).json()
    assert [item["workflow_id"] for item in first["items"]] == ids[::-1][:2]
    second = (
        await client.get("/v1/workflows", params={"limit": 2, "cursor": first["next_cursor"]})
    ).json()
    third = (
        await client.get("/v1/workflows", params={"limit": 2, "cursor": second["next_cursor"]})
    ).json()
    seen = [item["workflow_id"] for page in (first, second, third) for item in page["items"]]
    assert seen == ids[::-1]
    assert third["next_cursor"] is None
    # A last page that is exactly full says so too, rather than leading to an empty one.
    rest = await client.get("/v1/workflows", params={"limit": 3, "cursor": first["next_cursor"]})
    assert len(rest.json()["items"]) == 3 and rest.json()["next_cursor"] is None
    assert set(first["items"][0]) == {
        "workflow_id",
        "name",
        "description",
        "latest_version",
        "created_at",
    }


async def test_list_limit_is_bounded(client: Client) -> None:
    for limit in (0, 101, "many"):
        response = await client.get("/v1/workflows", params={"limit": limit})
        assert response.status_code == 400
        assert response.json()["code"] == "validation_error"


async def test_unknown_version_and_workflow_are_404(client: Client, booking_id: str) -> None:
    for path in (
        f"/v1/workflows/{booking_id}/versions/7",
        "/v1/workflows/65f0c0ffee0000000000abcd",
    ):
        response = await client.get(path)
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


async def test_another_tenant_sees_nothing(client: Client, booking_id: str) -> None:
    other = {"X-API-Key": KEY_B}
    assert (await client.get(f"/v1/workflows/{booking_id}", headers=other)).status_code == 404
    assert (
        await client.get(f"/v1/workflows/{booking_id}/versions/0", headers=other)
    ).status_code == 404
    assert (await client.get("/v1/workflows", headers=other)).json()["items"] == []
    publish = await client.post(
        f"/v1/workflows/{booking_id}/versions", json={"definition": SIMPLE}, headers=other
    )
    assert publish.status_code == 404
    execute = await client.post(f"/v1/workflows/{booking_id}/execute", json={}, headers=other)
    assert execute.status_code == 404
