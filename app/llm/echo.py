"""The built-in provider: the reply is the rendered prompt, streamed word by word (a
long one in at most 1,000 pieces).

It needs no network, so the bundled examples work offline, and its delay per word
(``TANDEM_ECHO_DELAY_MS``) makes slow generation visible and testable.
"""

import asyncio
import re
from collections.abc import Callable

from app.engine.llm import LlmCall, LlmReply

_WORDS = re.compile(r"\S+\s*|\s+")
# A long reply is streamed in about this many pieces at most, each of several words: a
# client that reads nothing must not be made to hold a delta per word of a long text.
MAX_DELTAS = 1_000
# Past this, a text's words are estimated (one per 5 characters) rather than counted.
_COUNTED_CHARACTERS = 100_000


class EchoClient:
    default_model = "echo"

    def __init__(self, delay_seconds: float = 0.0) -> None:
        self._delay = delay_seconds

    async def complete(self, call: LlmCall, on_delta: Callable[[str], None]) -> LlmReply:
        prompt = call.messages[-1].content
        words = _WORDS.findall(prompt)
        per_delta = -(-len(words) // MAX_DELTAS)  # 1 for a reply of up to MAX_DELTAS words
        for start in range(0, len(words), per_delta):
            if self._delay:
                await asyncio.sleep(self._delay)
            on_delta("".join(words[start : start + per_delta]))
        sent = sum(_word_count(m.content) for m in call.messages)
        usage = {"prompt_tokens": sent, "completion_tokens": _word_count(prompt)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return LlmReply(text="".join(words), usage=usage)


def _word_count(text: str) -> int:
    """Words as usage counts them (echo's tokens): counted, or estimated for long texts."""
    if len(text) > _COUNTED_CHARACTERS:
        return len(text) // 5
    return len(text.split())
