"""An LLM provider whose text the test hands out piece by piece."""

import asyncio
from collections.abc import Callable

from app.engine.llm import LlmCall, LlmReply


class Scripted:
    """Each call waits for pieces put in ``pieces`` and ends at ``None``; ``started`` is set
    when a call begins, ``sent`` counts the pieces given to the turn so far."""

    default_model = "scripted"

    def __init__(self) -> None:
        self.pieces: asyncio.Queue[str | None] = asyncio.Queue()
        self.started = asyncio.Event()
        self.sent = 0

    async def complete(self, call: LlmCall, on_delta: Callable[[str], None]) -> LlmReply:
        self.started.set()
        text = ""
        while (piece := await self.pieces.get()) is not None:
            on_delta(piece)
            self.sent += 1
            text += piece
        return LlmReply(text=text, usage={"total_tokens": len(text.split())})

    def say(self, *pieces: str | None) -> None:
        for piece in pieces:
            self.pieces.put_nowait(piece)
