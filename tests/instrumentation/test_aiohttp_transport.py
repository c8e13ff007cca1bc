"""The openai SDK's aiohttp mode (``DefaultAioHttpClient``: an ``httpx2.AsyncClient`` on an
aiohttp transport) is metered like any other client: P402 hooks ``AsyncClient.send``, not
a transport."""

from __future__ import annotations

import asyncio

from openai import AsyncOpenAI, DefaultAioHttpClient

from p402.instrumentation import owner
from p402.instrumentation.testing import manifest

MANIFEST = manifest()


def _attributes_of(spans) -> dict[str, object]:
    return dict(spans.one().attributes or {})


async def _with_aiohttp_client(standin, call) -> None:
    http_client = DefaultAioHttpClient()
    assert type(http_client._transport).__name__ == "AiohttpTransport"  # aiohttp is installed
    async with AsyncOpenAI(
        base_url=standin.url("/v1"), api_key="test", http_client=http_client
    ) as client:
        with owner(department="engineering"):
            await call(client)


def test_a_call_through_the_aiohttp_transport_is_metered(instrument, spans, standin):
    async def chat(client: AsyncOpenAI) -> None:
        await client.chat.completions.create(
            model="gpt-5-mini", messages=[{"role": "user", "content": "hi"}]
        )

    asyncio.run(_with_aiohttp_client(standin, chat))
    attributes = _attributes_of(spans)
    expected = MANIFEST["openai_chat.json"]["expect"]
    assert attributes["gen_ai.response.id"] == expected["gen_ai.response.id"]
    assert attributes["gen_ai.usage.input_tokens"] == expected["gen_ai.usage.input_tokens"]
    assert attributes["gen_ai.usage.cost.amount"] == expected["expected_usd"]
    assert attributes["p402.owner.department"] == "engineering"
    assert attributes["p402.usage.evidence"] == "provider_response"


def test_a_stream_through_the_aiohttp_transport_is_metered(instrument, spans, standin):
    chunks: list[object] = []

    async def stream(client: AsyncOpenAI) -> None:
        response = await client.chat.completions.create(
            model="gpt-4.1-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in response:
            chunks.append(chunk)

    asyncio.run(_with_aiohttp_client(standin, stream))
    attributes = _attributes_of(spans)
    expected = MANIFEST["openai_chat_stream.sse"]["expect"]
    assert chunks  # the application read the stream as usual
    assert attributes["gen_ai.response.id"] == expected["gen_ai.response.id"]
    assert attributes["gen_ai.usage.output_tokens"] == expected["gen_ai.usage.output_tokens"]
    assert attributes["gen_ai.usage.cost.amount"] == expected["expected_usd"]
    assert attributes["p402.usage.evidence"] == "stream_final"
