"""An LLM client that times its calls, counts their tokens, and logs provider errors."""

import logging
import time
from collections.abc import Callable

from app.engine.llm import LlmCall, LlmClient, LlmError, LlmReply
from app.telemetry.metrics import Metrics

logger = logging.getLogger("tandem.llm")
_TOKEN_KINDS = ("prompt_tokens", "completion_tokens", "total_tokens")


class MeasuredLlm:
    def __init__(self, llm: LlmClient, metrics: Metrics) -> None:
        self._llm = llm
        self._metrics = metrics
        self.default_model = llm.default_model

    async def complete(self, call: LlmCall, on_delta: Callable[[str], None]) -> LlmReply:
        model = self._metrics.model_label(call.model)
        started = time.perf_counter()
        try:
            reply = await self._llm.complete(call, on_delta)
        except LlmError as error:
            seconds = time.perf_counter() - started
            self._metrics.llm_seconds.labels(model, "error").observe(seconds)
            logger.warning(
                "LLM provider error after %.0f ms (model %s): %s", seconds * 1000, model, error
            )
            raise
        self._metrics.llm_seconds.labels(model, "ok").observe(time.perf_counter() - started)
        for kind in _TOKEN_KINDS:
            count = (reply.usage or {}).get(kind)
            if isinstance(count, int) and count >= 0:
                self._metrics.llm_tokens.labels(model, kind.removesuffix("_tokens")).inc(count)
        return reply
