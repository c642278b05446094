"""A composed 1.2+ image Bento: the root decodes an upload, a dependency scores the pixels.

``ImageScorer`` takes an image (a multipart upload, as a browser or ``requests`` sends
it), turns it into a float32 array and hands it to ``PixelModel`` over a handle; the
model (channel means through a small linear layer) answers ten scores as JSON. The same
API is written twice, ``score`` async and ``score_sync`` sync (BentoML's usual form), so
the benchmark compares both with their hand-written and ``bentoml serve`` counterparts.
"""

from __future__ import annotations

import bentoml
import numpy as np
from PIL.Image import Image

#: The model's weights: 3 channel means -> 10 scores.
WEIGHTS = np.random.default_rng(0).standard_normal((3, 10)).astype(np.float32)


def pixels_of(image: Image) -> np.ndarray:
    """The decoded image as float32 RGB rows, as a vision model takes it."""
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def scores_of(pixels: np.ndarray) -> list[float]:
    return (pixels.mean(axis=(0, 1)) / 255.0 @ WEIGHTS).round(4).tolist()  # type: ignore[no-any-return]


@bentoml.service
class PixelModel:
    @bentoml.api
    def predict(self, pixels: np.ndarray) -> list[float]:
        return scores_of(pixels)


@bentoml.service
class ImageScorer:
    model = bentoml.depends(PixelModel)

    @bentoml.api
    async def score(self, image: Image) -> list[float]:
        return await self.model.to_async.predict(pixels_of(image))  # type: ignore[no-any-return]

    @bentoml.api
    def score_sync(self, image: Image) -> list[float]:
        return self.model.predict(pixels_of(image))  # type: ignore[no-any-return]
