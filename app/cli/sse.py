"""Server-Sent Events read line by line: what Tandem's streams send (``event:``, ``id:``,
``data:`` of one JSON value, comment lines as keep-alives)."""

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SseMessage:
    event: str
    id: str | None
    data: Any


def sse_messages(lines: Iterable[str]) -> Iterator[SseMessage]:
    """The messages of a stream as its lines arrive; comments and messages without data
    are skipped. Data that is not JSON raises ``ValueError``."""
    fields: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "data" in fields:
                yield SseMessage(
                    event=fields.get("event", "message"),
                    id=fields.get("id"),
                    data=_decoded(fields["data"]),
                )
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data" and "data" in fields:  # data spread over several lines
                value = fields["data"] + "\n" + value
            fields[name] = value
    if "data" in fields:  # a last message not followed by a blank line
        yield SseMessage(fields.get("event", "message"), fields.get("id"), _decoded(fields["data"]))


def _decoded(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        raise ValueError(f"a stream message whose data is not JSON: {data[:80]!r}") from None
