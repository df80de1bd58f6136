"""CORS: a browser on an allowed origin may call every endpoint with the contract's headers,
and read what the asynchronous API answers; any other origin may not."""

import pytest

from app.api.cors import ALLOWED_HEADERS
from app.config import ConfigError, Settings, parse_cors_origins
from tests.api.helpers import Client, turn
from tests.conftest import KEY_A, KEY_B, TENANT_A, TENANT_B

FRONTEND = "https://chat.example.com"
ELSEWHERE = "https://evil.example.net"
EXECUTE = "/v1/workflows/{}/execute"


@pytest.fixture
def settings() -> Settings:
    return Settings(
        api_keys={KEY_A: TENANT_A, KEY_B: TENANT_B},
        cors_origins=(FRONTEND, "http://localhost:*"),
    )


def preflight(origin: str, method: str = "POST", headers: str = "") -> dict[str, str]:
    asked = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        asked["Access-Control-Request-Headers"] = headers
    return asked


def listed(value: str | None) -> set[str]:
    return {part.strip().lower() for part in (value or "").split(",") if part.strip()}


async def test_a_preflight_from_an_allowed_origin_allows_every_header_of_the_contract(
    client: Client, booking_id: str
) -> None:
    requested = "x-api-key,authorization,idempotency-key,last-event-id,prefer,content-type,accept,x-execution-source"
    response = await client.options(
        EXECUTE.format(booking_id), headers=preflight(FRONTEND, headers=requested)
    )
    assert response.status_code == 204, response.text
    assert response.headers["access-control-allow-origin"] == FRONTEND
    assert {header.lower() for header in ALLOWED_HEADERS} <= listed(
        response.headers["access-control-allow-headers"]
    )
    assert {"get", "post", "delete"} <= listed(response.headers["access-control-allow-methods"])
    assert int(response.headers["access-control-max-age"]) > 0
    assert "access-control-allow-credentials" not in response.headers


async def test_a_preflight_needs_no_api_key_and_covers_the_run_paths(client: Client) -> None:
    run = "/v1/runs/65f0c0ffee0000000000abcd"
    for path, method, headers in [
        (run, "DELETE", "x-api-key"),
        (f"{run}/stream", "GET", "authorization,last-event-id"),
        ("/v1/workflows", "POST", "x-api-key,content-type"),
    ]:
        response = await client.options(
            path, headers={**preflight(FRONTEND, method, headers), "X-API-Key": ""}
        )
        assert response.status_code == 204, (path, response.text)
        assert response.headers["access-control-allow-origin"] == FRONTEND


async def test_a_wildcard_port_matches_any_port_of_that_host(client: Client) -> None:
    response = await client.options("/v1/workflows", headers=preflight("http://localhost:5173"))
    assert response.headers["access-control-allow-origin"] == "http://localhost:5173"


async def test_a_preflight_from_another_origin_is_refused(client: Client) -> None:
    response = await client.options("/v1/workflows", headers=preflight(ELSEWHERE))
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


async def test_a_preflight_for_an_unknown_header_is_refused(client: Client) -> None:
    response = await client.options("/v1/workflows", headers=preflight(FRONTEND, headers="x-mine"))
    assert response.status_code == 400


async def test_an_asynchronous_turn_lets_the_page_read_its_location(
    client: Client, booking_id: str
) -> None:
    response = await client.post(
        EXECUTE.format(booking_id),
        json={},
        headers={"Origin": FRONTEND, "Prefer": "respond-async"},
    )
    assert response.status_code == 202, response.text
    assert response.headers["access-control-allow-origin"] == FRONTEND
    assert "origin" in listed(response.headers["vary"])
    assert {"location", "preference-applied"} <= listed(
        response.headers["access-control-expose-headers"]
    )
    assert response.headers["location"] == response.json()["status_url"]


async def test_an_error_is_readable_by_the_page_too(client: Client, booking_id: str) -> None:
    # Without the CORS headers on a 401 or 409, a page would see a network error instead of
    # the {"detail", "code"} body.
    response = await client.get("/v1/workflows", headers={"Origin": FRONTEND, "X-API-Key": "no"})
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == FRONTEND
    run_id = (await turn(client, booking_id))["run_id"]
    await turn(client, booking_id, run_id, run_input={"command": "stop"})
    response = await client.delete(f"/v1/runs/{run_id}", headers={"Origin": FRONTEND})
    assert response.status_code == 409
    assert response.headers["access-control-allow-origin"] == FRONTEND


async def test_a_request_from_another_origin_gets_no_allow_origin(client: Client) -> None:
    response = await client.get("/v1/workflows", headers={"Origin": ELSEWHERE})
    assert response.status_code == 200  # the browser, not the server, withholds the answer
    assert "access-control-allow-origin" not in response.headers


class TestWithoutOrigins:
    @pytest.fixture
    def settings(self) -> Settings:
        return Settings(api_keys={KEY_A: TENANT_A})

    async def test_no_origin_is_allowed_by_default(self, client: Client) -> None:
        response = await client.options("/v1/workflows", headers=preflight(FRONTEND))
        assert "access-control-allow-origin" not in response.headers
        response = await client.get("/v1/workflows", headers={"Origin": FRONTEND})
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers


class TestAnyOrigin:
    @pytest.fixture
    def settings(self) -> Settings:
        return Settings(api_keys={KEY_A: TENANT_A}, cors_origins=("*",))

    async def test_star_allows_every_origin(self, client: Client) -> None:
        response = await client.options(
            "/v1/workflows", headers=preflight(ELSEWHERE, headers="x-api-key,idempotency-key")
        )
        assert response.status_code == 204
        assert response.headers["access-control-allow-origin"] == "*"
        response = await client.get("/v1/workflows", headers={"Origin": ELSEWHERE})
        assert response.headers["access-control-allow-origin"] == "*"


def test_origins_are_read_from_a_comma_separated_list() -> None:
    assert parse_cors_origins("") == ()
    assert parse_cors_origins(" https://a.example , http://localhost:5173,") == (
        "https://a.example",
        "http://localhost:5173",
    )
    assert parse_cors_origins("*") == ("*",)
    settings = Settings.from_env({"TANDEM_CORS_ORIGINS": "https://a.example"})
    assert settings.cors_origins == ("https://a.example",)


@pytest.mark.parametrize("entry", ["localhost:5173", "https://a.example/", "https://a.example/app"])
def test_an_entry_that_is_not_an_origin_is_refused(entry: str) -> None:
    with pytest.raises(ConfigError, match="TANDEM_CORS_ORIGINS"):
        parse_cors_origins(entry)
