"""Every request gets an id: the caller's ``X-Request-ID`` when it sends a sensible one,
else a new one. It is answered in ``X-Request-ID`` and carried by every log line written
while the request is served (``app.telemetry.logs``), so that a client's report and the
server's lines meet."""

import os
import re

from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.telemetry.logs import request_id

HEADER = "x-request-id"
_HEADER_BYTES = HEADER.encode()
# Ids a caller may choose: short, and nothing that could forge a log line.
_ACCEPTED = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_ids(app: ASGIApp) -> ASGIApp:
    async def with_request_id(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        given = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = value.decode("latin-1")
                break
        # A new one: 32 random hex digits, as a UUID4's hex without the UUID's cost.
        current = given if _ACCEPTED.fullmatch(given) else os.urandom(16).hex()
        token = request_id.set(current)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers")
                if type(headers) is list:  # as Litestar sends them: added without a copy
                    headers.append((_HEADER_BYTES, current.encode("latin-1")))
                else:
                    MutableScopeHeaders.from_message(message)[HEADER] = current
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)

    return with_request_id
