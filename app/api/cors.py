"""Cross-origin requests (CORS): which origins may call the API from a browser, with
Litestar's own ``CORSConfig``. ``TANDEM_CORS_ORIGINS`` names the origins; unset, a browser
reaches Tandem from Tandem's own origin only (the playground at ``/``)."""

from typing import Literal

from litestar.config.cors import CORSConfig
from litestar.types import Method

# Every request header a client of the contract sends; Accept and Content-Type are
# allowed by Litestar anyway, and listed so that this is the whole list.
ALLOWED_HEADERS = [
    "Accept",
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "Last-Event-ID",
    "Prefer",
    "X-API-Key",
    "X-Execution-Source",
    "X-Request-ID",
]

# Response headers a script may read beyond the CORS-safelisted ones (Content-Type,
# Cache-Control, …): an asynchronous turn's status URL and the preference it applied.
# A new response header that clients need goes here.
EXPOSED_HEADERS = ["Location", "Preference-Applied", "Idempotent-Replayed", "X-Request-ID"]

ALLOWED_METHODS: list[Literal["*"] | Method] = ["GET", "POST", "DELETE", "OPTIONS"]

# How long a browser may cache a preflight's answer.
PREFLIGHT_MAX_AGE_SECONDS = 600


def cors_config(origins: tuple[str, ...]) -> CORSConfig | None:
    """Litestar's CORS configuration for ``origins`` (``*`` for any); None for none."""
    if not origins:
        return None
    return CORSConfig(
        allow_origins=list(origins),
        allow_methods=ALLOWED_METHODS,
        allow_headers=ALLOWED_HEADERS,
        expose_headers=EXPOSED_HEADERS,
        # Keys travel in headers, never in cookies: a browser need not send credentials.
        allow_credentials=False,
        max_age=PREFLIGHT_MAX_AGE_SECONDS,
    )
