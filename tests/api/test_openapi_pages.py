"""The OpenAPI pages work offline: every script, style and icon they load is served by
Tandem itself, from the installed package, without an API key."""

import re

import pytest

from tests.api.helpers import Client

# src="…" and href='…' in the page's own markup.
LOADED = re.compile(r"""\b(?:src|href)=["']([^"']+)["']""")


@pytest.mark.parametrize("page", ["/schema", "/schema/redoc", "/schema/swagger"])
async def test_a_page_loads_only_what_tandem_serves(client: Client, page: str) -> None:
    response = await client.get(page, headers={"X-API-Key": ""})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    loaded = LOADED.findall(html)
    assert loaded, html[:500]
    assert not re.search(r"(?:src|href)=[\"']https?://", html)
    assert "fonts.googleapis" not in html and "cdn." not in html
    for url in loaded:
        assert url.startswith("/schema/assets/"), url
        asset = await client.get(url, headers={"X-API-Key": ""})
        assert asset.status_code == 200, url
        assert len(asset.content) > 500, url


async def test_the_scripts_are_the_real_bundles(client: Client) -> None:
    swagger = await client.get("/schema/assets/swagger-ui/swagger-ui-bundle.js")
    assert swagger.headers["content-type"].startswith("text/javascript")
    assert "SwaggerUIBundle" in swagger.text
    redoc = await client.get("/schema/assets/redoc/redoc.standalone.js")
    assert "Redoc" in redoc.text[:2000]
    assert (await client.get("/schema/assets/redoc/LICENSE")).status_code == 200


async def test_the_assets_are_not_in_the_openapi_document(client: Client) -> None:
    spec = (await client.get("/schema/openapi.json")).json()
    assert not [path for path in spec["paths"] if path.startswith("/schema")]
