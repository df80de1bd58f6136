import asyncio
import contextlib

import pytest

from app.config import Settings
from app.engine.llm import ChatMessage, LlmCall, LlmError
from app.llm import build_llm_client
from app.llm.echo import EchoClient
from app.llm.openai_compatible import OpenAICompatibleClient
from tests.llm.fake_openai import fake_openai

CALL = LlmCall(
    model="tiny",
    messages=[
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="Say hello"),
    ],
    temperature=0.2,
    max_tokens=50,
)


def client(base_url: str, retries: int = 2, timeout: float = 5.0) -> OpenAICompatibleClient:
    return OpenAICompatibleClient(
        base_url=base_url,
        api_key="k",
        default_model="tiny",
        timeout_seconds=timeout,
        max_retries=retries,
    )


async def test_echo_streams_the_prompt_word_by_word() -> None:
    deltas: list[str] = []
    reply = await EchoClient().complete(CALL, deltas.append)
    assert deltas == ["Say ", "hello"]
    assert reply.text == "Say hello"
    assert reply.usage == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}


async def test_openai_streams_deltas_and_records_usage() -> None:
    with fake_openai([("stream", ["Hel", "lo", " there"])]) as fake:
        deltas: list[str] = []
        reply = await client(fake.base_url).complete(CALL, deltas.append)
    assert deltas == ["Hel", "lo", " there"]
    assert reply.text == "Hello there"
    assert reply.usage == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    sent = fake.requests[0]
    assert sent["model"] == "tiny" and sent["stream"] is True
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello"},
    ]
    assert sent["temperature"] == 0.2 and sent["max_tokens"] == 50


async def test_openai_retries_a_429_then_succeeds() -> None:
    with fake_openai([("status", 429), ("stream", ["ok"])]) as fake:
        reply = await client(fake.base_url).complete(CALL, lambda _: None)
    assert reply.text == "ok"
    assert len(fake.requests) == 2


async def test_openai_server_error_after_retries_is_an_llm_error() -> None:
    with fake_openai([("status", 500)]) as fake, pytest.raises(LlmError, match="500"):
        await client(fake.base_url, retries=1).complete(CALL, lambda _: None)
    assert len(fake.requests) == 2  # the first try and one retry


async def test_openai_client_errors_are_not_retried() -> None:
    with fake_openai([("status", 400)]) as fake, pytest.raises(LlmError, match="400"):
        await client(fake.base_url).complete(CALL, lambda _: None)
    assert len(fake.requests) == 1


async def test_openai_timeout_is_an_llm_error() -> None:
    with (
        fake_openai([("hang", 2.0)]) as fake,
        pytest.raises(LlmError, match=r"no answer within 0\.3 s"),
    ):
        await client(fake.base_url, retries=0, timeout=0.3).complete(CALL, lambda _: None)


async def test_unreachable_provider_is_an_llm_error() -> None:
    with pytest.raises(LlmError, match="could not reach"):
        await client("http://127.0.0.1:1/v1", retries=0).complete(CALL, lambda _: None)


def test_configuration_picks_the_provider() -> None:
    assert isinstance(build_llm_client(Settings.from_env({})), EchoClient)
    chosen = build_llm_client(
        Settings.from_env(
            {"TANDEM_LLM_BASE_URL": "http://127.0.0.1:11434/v1", "TANDEM_LLM_MODEL": "llama3"}
        )
    )
    assert isinstance(chosen, OpenAICompatibleClient) and chosen.default_model == "llama3"


async def test_an_abandoned_generation_closes_the_connection_to_the_provider() -> None:
    words = [f"w{i} " for i in range(100)]  # 10 s of generation
    with fake_openai([("slow", words)]) as fake:
        first = asyncio.Event()
        generation = asyncio.create_task(
            client(fake.base_url).complete(CALL, lambda _: first.set())
        )
        await asyncio.wait_for(first.wait(), timeout=5)
        generation.cancel()  # what a stop does to the turn's engine
        with contextlib.suppress(asyncio.CancelledError):
            await generation
        # The server notices at its next write, 100 ms later.
        assert await asyncio.to_thread(fake.disconnected.wait, 5)


async def test_echo_streams_a_long_reply_in_at_most_a_thousand_pieces() -> None:
    words = " ".join(f"w{i}" for i in range(5000))
    call = LlmCall(model="echo", messages=[ChatMessage(role="user", content=words)])
    deltas: list[str] = []
    reply = await EchoClient().complete(call, deltas.append)
    assert len(deltas) <= 1000 and "".join(deltas) == words == reply.text
