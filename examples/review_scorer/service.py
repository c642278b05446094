"""A composed BentoML 1.2+ Bento: a review scorer that depends on a text preprocessor.

``Preprocessor`` normalises and tokenises text; ``ReviewScorer`` depends on it, scores
reviews in batches (``score``) and streams a word-by-word explanation (``explain``). No
model files are needed, so the example builds in a second; the word weights stand in for
a model.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator

import bentoml

WEIGHTS = {
    "great": 2.0, "good": 1.0, "love": 2.0, "fine": 0.5, "fast": 0.5,
    "bad": -1.0, "slow": -0.5, "awful": -2.0, "broken": -2.0, "hate": -2.0,
}  # fmt: skip


@bentoml.service(resources={"cpu": "1"}, traffic={"timeout": 10})
class Preprocessor:
    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=100)
    def normalize(self, texts: list[str]) -> list[str]:
        """Lower-case each text and keep only letters, single-spaced."""
        return [" ".join(re.findall(r"[a-z]+", text.lower())) for text in texts]

    @bentoml.api
    async def tokens(self, text: str) -> list[str]:
        return re.findall(r"[a-z]+", text.lower())


@bentoml.service(traffic={"timeout": 30, "max_concurrency": 64})
class ReviewScorer:
    preprocessor = bentoml.depends(Preprocessor)

    def __init__(self) -> None:
        self.largest_batch = 0

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=200)
    def score(self, reviews: list[str]) -> list[float]:
        """One score per review: the sum of its words' weights."""
        self.largest_batch = max(self.largest_batch, len(reviews))
        normalized = self.preprocessor.normalize(reviews)
        return [sum(WEIGHTS.get(word, 0.0) for word in text.split()) for text in normalized]

    @bentoml.api
    async def explain(self, review: str) -> AsyncGenerator[str, None]:
        """Stream each word's weight as it is looked up, then the total."""
        total = 0.0
        for word in await self.preprocessor.to_async.tokens(review):
            weight = WEIGHTS.get(word, 0.0)
            total += weight
            yield f"{word} {weight:+.1f}\n"
            await asyncio.sleep(0.05)
        yield f"total {total:+.1f}\n"

    @bentoml.api
    def stats(self) -> dict[str, int]:
        """The largest batch ``score`` has seen in this replica."""
        return {"largest_batch": self.largest_batch}
