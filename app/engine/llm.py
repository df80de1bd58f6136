"""What the engine needs from an LLM provider: one small interface, implemented in app/llm/."""

from collections.abc import Callable
from typing import Literal, Protocol

import msgspec


class ChatMessage(msgspec.Struct):
    role: Literal["system", "user", "assistant"]
    content: str


class LlmCall(msgspec.Struct, kw_only=True):
    model: str
    messages: list[ChatMessage]
    temperature: float | None = None
    max_tokens: int | None = None


class LlmReply(msgspec.Struct, kw_only=True):
    text: str
    usage: dict[str, int] | None = None


class LlmError(Exception):
    """The provider failed (unreachable, refused, timed out): the message says what it said."""


class LlmClient(Protocol):
    default_model: str

    async def complete(self, call: LlmCall, on_delta: Callable[[str], None]) -> LlmReply:
        """Generate a reply, calling ``on_delta`` with each piece of text as it arrives."""
        ...
