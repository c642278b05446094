"""Streams of tokens measured as a user of an LLM service feels them.

``measure`` keeps ``streams`` concurrent streaming requests going for ``duration``
seconds, one after another on each of ``streams`` keep-alive connections, and reports per
stream the time to its first token and its tokens per second (its tokens over its whole
time, request sent to last byte). Tokens are counted by bytes: the token Bentos send six
bytes per token, however the server or Ray chunks them. A stream that answers other than
200, or with other than all its tokens, counts as an error.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import httpx

TOKEN_BYTES = 6


async def _streams(
    url: str, body: bytes, streams: int, duration: float, tokens: int
) -> dict[str, Any]:
    ttft: list[float] = []
    rates: list[float] = []
    errors = 0
    deadline = time.monotonic() + duration
    limits = httpx.Limits(max_connections=streams, max_keepalive_connections=streams)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one_connection() -> None:
            nonlocal errors
            while time.monotonic() < deadline:
                started = time.perf_counter()
                first = None
                size = 0
                try:
                    async with client.stream(
                        "POST", url, content=body, headers={"Content-Type": "application/json"}
                    ) as response:
                        async for chunk in response.aiter_raw():
                            if chunk and first is None:
                                first = time.perf_counter()
                            size += len(chunk)
                        ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                ended = time.perf_counter()
                if not ok or first is None or size != tokens * TOKEN_BYTES:
                    errors += 1
                    continue
                ttft.append(first - started)
                rates.append(tokens / (ended - started))

        await asyncio.gather(*(one_connection() for _ in range(streams)))
    ttft.sort()
    return {
        "rps": statistics.median(rates) if rates else 0.0,  # tokens/s per stream
        "p50_ms": 1000 * statistics.median(ttft) if ttft else float("nan"),
        "p99_ms": 1000 * ttft[min(len(ttft) - 1, int(0.99 * len(ttft)))] if ttft else float("nan"),
        "errors": errors,
        "streams": len(rates),
        "tokens_per_s": len(rates) * tokens / duration,  # all streams together
    }


def measure(
    url: str, body: bytes, streams: int, duration: float, tokens: int = 256
) -> dict[str, Any]:
    return asyncio.run(_streams(url, body, streams, duration, tokens))
