"""Reading Server-Sent Events as a browser does: messages with their id, and comments."""

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Message:
    event: str
    id: str | None
    data: Any

    @property
    def seq(self) -> int | None:
        return self.data["seq"] if self.event not in ("llm_delta", "turn_result", "error") else None


async def messages(response: httpx.Response) -> AsyncIterator[Message | str]:
    """Each message of an SSE response as it arrives; a comment line as its text."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield line[1:].strip()
        elif line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        elif fields:
            yield Message(
                fields.get("event", "message"), fields.get("id"), json.loads(fields["data"])
            )
            fields = {}
