"""The playground's files as the server serves them; the page itself is driven in a real
browser by ``test_browser.py``."""

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest

from app.playground import STATIC_DIRECTORY
from tests.api.helpers import Client

PUBLIC = {"X-API-Key": ""}


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/", "text/html"),
        ("/index.html", "text/html"),
        ("/playground.js", "text/javascript"),
        ("/playground.css", "text/css"),
    ],
)
async def test_the_page_and_its_files_are_public(
    client: Client, path: str, content_type: str
) -> None:
    response = await client.get(path, headers=PUBLIC)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(content_type)
    # A browser asks again after an upgrade rather than running an older script.
    assert response.headers["cache-control"] == "no-cache"


async def test_the_page_shadows_no_route_of_the_api(client: Client) -> None:
    unauthorised = await client.get("/v1/workflows", headers=PUBLIC)
    assert unauthorised.status_code == 401
    assert unauthorised.json()["code"] == "unauthorized"
    assert (await client.get("/v1/workflows")).status_code == 200
    assert (await client.get("/healthz", headers=PUBLIC)).json() == {"status": "ok"}
    assert (await client.get("/schema/openapi.json", headers=PUBLIC)).status_code == 200
    listed = (await client.get("/schema/openapi.json", headers=PUBLIC)).json()["paths"]
    assert all(path.startswith(("/v1/", "/healthz", "/readyz")) for path in listed), listed


async def test_an_unknown_path_answers_the_error_body(client: Client) -> None:
    for path in ("/nothing-here", "/v1/nothing-here", "/../pyproject.toml", "/static/index.html"):
        response = await client.get(path, headers=PUBLIC)
        assert response.status_code in (401, 404), (path, response.text)
        if response.status_code == 404:
            assert response.json() == {
                "detail": "There is nothing at this path.",
                "code": "not_found",
            }


def test_the_page_loads_nothing_from_elsewhere() -> None:
    """No CDN, no font service: the page works offline, and its policy says so."""
    html = (STATIC_DIRECTORY / "index.html").read_text()
    assert "default-src 'self'" in html
    for name in ("index.html", "playground.js", "playground.css"):
        text = (STATIC_DIRECTORY / name).read_text()
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", text), name
        assert "@import" not in text and "url(http" not in text, name


def test_every_file_of_the_page_is_package_data() -> None:
    """A non-editable install ships only what ``package-data`` names."""
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["app.playground"]
    for file in STATIC_DIRECTORY.iterdir():
        relative = file.relative_to(STATIC_DIRECTORY.parent).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative
