"""A 1.2+ Bento that streams tokens, from the root and through a dependency.

``stream`` yields the tokens itself; ``relay`` passes on those of ``TokenSource``, which
yields them in another deployment (as an LLM service in front of its engine). Each token
is six characters, so a client counts tokens by bytes whatever the chunking.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import bentoml


async def tokens_of(count: int, pause_ms: float) -> AsyncGenerator[str, None]:
    for i in range(count):
        if pause_ms:
            await asyncio.sleep(pause_ms / 1000)
        yield f"{i % 100000:05d} "


@bentoml.service
class TokenSource:
    @bentoml.api
    async def generate(self, count: int = 256, pause_ms: float = 0) -> AsyncGenerator[str, None]:
        async for token in tokens_of(count, pause_ms):
            yield token


@bentoml.service
class TokenStream:
    source = bentoml.depends(TokenSource)

    @bentoml.api
    async def stream(self, count: int = 256, pause_ms: float = 0) -> AsyncGenerator[str, None]:
        async for token in tokens_of(count, pause_ms):
            yield token

    @bentoml.api
    async def relay(self, count: int = 256, pause_ms: float = 0) -> AsyncGenerator[str, None]:
        async for token in self.source.to_async.generate(count=count, pause_ms=pause_ms):
            yield token
