"""Any OpenAI-compatible chat-completions endpoint (OpenAI, Ollama, vLLM, …), through the
official ``openai`` client: streaming, a request timeout, and retries with backoff on
429 and 5xx (the client's own, which honours ``Retry-After``)."""

from collections.abc import Callable
from typing import Any

import openai

from app.engine.llm import LlmCall, LlmError, LlmReply


class OpenAICompatibleClient:
    def __init__(
        self,
        *,
        base_url: str | None,
        api_key: str | None,
        default_model: str,
        timeout_seconds: float,
        max_retries: int,
    ) -> None:
        self.default_model = default_model
        self._timeout = timeout_seconds
        self._retries = max_retries
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            # Local servers (Ollama, vLLM) take any key; the client insists on one.
            api_key=api_key or "not-needed",
            timeout=timeout_seconds,
            max_retries=max_retries,
        )

    async def complete(self, call: LlmCall, on_delta: Callable[[str], None]) -> LlmReply:
        messages: Any = [{"role": m.role, "content": m.content} for m in call.messages]
        parts: list[str] = []
        usage: dict[str, int] | None = None
        try:
            stream = await self._client.chat.completions.create(
                model=call.model,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
                temperature=openai.omit if call.temperature is None else call.temperature,
                max_tokens=openai.omit if call.max_tokens is None else call.max_tokens,
            )
            # Leaving the block closes the connection, also when the turn is cancelled.
            async with stream:
                async for chunk in stream:
                    if chunk.usage is not None:
                        usage = {
                            "prompt_tokens": chunk.usage.prompt_tokens,
                            "completion_tokens": chunk.usage.completion_tokens,
                            "total_tokens": chunk.usage.total_tokens,
                        }
                    for choice in chunk.choices:
                        if choice.delta.content:
                            parts.append(choice.delta.content)
                            on_delta(choice.delta.content)
        except openai.APITimeoutError:
            raise LlmError(
                f"no answer within {self._timeout:g} s ({self._retries} retries)"
            ) from None
        except openai.APIConnectionError as error:
            raise LlmError(f"could not reach the provider: {error}") from None
        except openai.APIStatusError as error:
            raise LlmError(f"the provider answered {error.status_code}: {error.message}") from None
        except openai.APIError as error:
            raise LlmError(f"the provider failed: {error}") from None
        return LlmReply(text="".join(parts), usage=usage)
