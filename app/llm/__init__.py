"""LLM providers behind the engine's one small interface (``app.engine.llm.LlmClient``)."""

from app.config import Settings
from app.engine.llm import LlmClient
from app.llm.echo import EchoClient


def build_llm_client(settings: Settings) -> LlmClient:
    """The provider the configuration names: ``echo`` (the default) or ``openai``."""
    if settings.llm_provider == "openai":
        # Imported only when configured: the openai package takes about 0.8 s to import,
        # half of a server's start-up, for the default echo provider that never uses it.
        from app.llm.openai_compatible import OpenAICompatibleClient

        return OpenAICompatibleClient(
            base_url=settings.llm_base_url,
            api_key=settings.llm_api_key,
            default_model=settings.llm_model,
            timeout_seconds=settings.llm_timeout_seconds,
            max_retries=settings.llm_max_retries,
        )
    return EchoClient(delay_seconds=settings.echo_delay_ms / 1000)
