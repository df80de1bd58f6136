"""The built-in provider: the reply is the rendered prompt, streamed word by word.

It needs no network, so the bundled examples work offline, and its delay per word
(``TANDEM_ECHO_DELAY_MS``) makes slow generation visible and testable.
"""

import asyncio
import re
from collections.abc import Callable

from app.engine.llm import LlmCall, LlmReply

_WORDS = re.compile(r"\S+\s*|\s+")


class EchoClient:
    default_model = "echo"

    def __init__(self, delay_seconds: float = 0.0) -> None:
        self._delay = delay_seconds

    async def complete(self, call: LlmCall, on_delta: Callable[[str], None]) -> LlmReply:
        prompt = call.messages[-1].content
        words = _WORDS.findall(prompt)
        for word in words:
            if self._delay:
                await asyncio.sleep(self._delay)
            on_delta(word)
        sent = sum(len(m.content.split()) for m in call.messages)
        usage = {"prompt_tokens": sent, "completion_tokens": len(prompt.split())}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return LlmReply(text="".join(words), usage=usage)
