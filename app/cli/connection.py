"""The command line's way to a running Tandem: the URL and key from the environment the
server's banner prints, and HTTP answers turned into one-line errors."""

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx

from app.cli.sse import SseMessage, sse_messages

URL_VARIABLE = "TANDEM_URL"
KEY_VARIABLE = "TANDEM_KEY"
DEFAULT_URL = "http://127.0.0.1:8000"
# A blocking request answers within this; a stream may stay quiet longer (an LLM thinks,
# the server sends a keep-alive comment every 15 s), so it waits for as long as it takes.
REQUEST_TIMEOUT = httpx.Timeout(30.0)
STREAM_TIMEOUT = httpx.Timeout(30.0, read=None)


class CliError(Exception):
    """A failure the command reports as ``tandem: <message>`` and a non-zero exit, never a
    traceback; the message may carry more lines (one per path of a refused definition)."""


class ApiError(CliError):
    """The server answered with an error body ``{"detail", "code", "errors"?}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class Tandem:
    """A client of one Tandem server, for one API key."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url, headers={"X-API-Key": key}, timeout=REQUEST_TIMEOUT
        )

    @classmethod
    def from_environment(
        cls, url: str | None, key: str | None, env: Mapping[str, str] = os.environ
    ) -> "Tandem":
        """The server of ``--url``/``--key``, else of ``TANDEM_URL``/``TANDEM_KEY``."""
        url = url or env.get(URL_VARIABLE) or DEFAULT_URL
        key = key or env.get(KEY_VARIABLE)
        if not key:
            raise CliError(
                f"no API key: set {KEY_VARIABLE} (the server's start-up banner prints an "
                f"`export {URL_VARIABLE}=... {KEY_VARIABLE}=...` line) or pass --key"
            )
        if not url.startswith(("http://", "https://")):
            raise CliError(f"{URL_VARIABLE} must be an http:// or https:// URL, not {url!r}")
        return cls(url, key)

    def close(self) -> None:
        self._http.close()

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One request; its status and JSON answer, or ``ApiError`` for a 4xx or 5xx."""
        with self._transport():
            response = self._http.request(method, path, json=body, headers=headers)
        return response.status_code, self._answer(response)

    @contextmanager
    def stream(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Iterator[Iterator[SseMessage]]:
        """Server-Sent Events from one request, as they arrive. An answer that is not a
        stream (an error found before the turn started) raises ``ApiError``."""
        headers = {"Accept": "text/event-stream", **(headers or {})}
        with (
            self._transport(),
            self._http.stream(
                method, path, json=body, headers=headers, timeout=STREAM_TIMEOUT
            ) as response,
        ):
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                response.read()
                self._answer(response)
                raise CliError(f"the server answered {response.status_code} without a stream")
            yield _checked(sse_messages(response.iter_lines()))

    @contextmanager
    def _transport(self) -> Iterator[None]:
        try:
            yield
        except httpx.ConnectError:
            raise CliError(
                f"cannot reach Tandem at {self.url}: is the server running? "
                f"({URL_VARIABLE} names it)"
            ) from None
        except httpx.TimeoutException:
            raise CliError(f"Tandem at {self.url} did not answer in time") from None
        except httpx.HTTPError as error:  # a reset connection, a malformed answer, a bad URL
            raise CliError(f"the connection to Tandem at {self.url} failed: {error}") from None

    def _answer(self, response: httpx.Response) -> Any:
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code < 400:
            if answer is None:
                raise CliError(f"{self.url} answered {response.status_code} without JSON")
            return answer
        raise _api_error(response.status_code, answer, response.text)


def _checked(messages: Iterator[SseMessage]) -> Iterator[SseMessage]:
    try:
        yield from messages
    except ValueError as error:
        raise CliError(f"the server's stream is malformed: {error}") from None


def _api_error(status: int, answer: Any, text: str) -> ApiError:
    if status == 401:
        return ApiError(
            status,
            "unauthorized",
            f"the server refused the API key (401): set {KEY_VARIABLE} to a key it knows "
            "(the banner prints the dev key; TANDEM_API_KEYS sets the server's keys)",
        )
    if not isinstance(answer, dict) or "detail" not in answer:
        snippet = " ".join(text.split())[:200] or "no body"
        return ApiError(status, "", f"the server answered {status}: {snippet}")
    code = str(answer.get("code", ""))
    lines = [f"{answer['detail']} ({status} {code})"]
    for item in answer.get("errors") or []:
        if isinstance(item, dict):
            lines.append(f"  {item.get('path') or '(body)'}: {item.get('message', '')}")
    return ApiError(status, code, "\n".join(lines))
