"""The chat playground: a page at ``/`` to hold a conversation with any workflow.

Plain HTML, CSS and JavaScript in ``static/``, shipped as package data and served as
they are (no build step, nothing from a CDN, so it works offline). The page itself is
public; it asks for an API key, keeps it in the browser's session storage and sends
it on every ``/v1`` call it makes, like any other client.
"""

from pathlib import Path
from typing import Any

from litestar import Request, Response, Router
from litestar.datastructures import CacheControlHeader
from litestar.exceptions import NotFoundException
from litestar.static_files import create_static_files_router

from app.api.errors import error_response
from app.api.schemas import ErrorBody

STATIC_DIRECTORY = Path(__file__).parent / "static"


def playground_router() -> Router:
    """``/`` (``index.html``) and the page's files. Litestar routes a path to the most
    specific handler, so ``/v1``, ``/schema``, ``/healthz`` and ``/readyz`` keep theirs;
    ``exclude_from_auth`` is the API-key middleware's own opt-out."""
    return create_static_files_router(
        path="/",
        directories=[STATIC_DIRECTORY],
        html_mode=True,
        name="playground",
        opt={"exclude_from_auth": True},
        include_in_schema=False,
        # Revalidated on each load, so that a browser never runs an older page's script
        # against a newer server.
        cache_control=CacheControlHeader(no_cache=True),
        exception_handlers={NotFoundException: _nothing_here},
    )


def _nothing_here(_: Request[Any, Any, Any], __: NotFoundException) -> Response[ErrorBody]:
    # Any path no other route takes ends here: answered as every unknown path is.
    return error_response(404, ErrorBody(detail="There is nothing at this path.", code="not_found"))
