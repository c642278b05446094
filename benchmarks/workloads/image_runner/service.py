"""The runner-based image Bento: an ``Image`` IO descriptor, the pixels to a runner.

The same work as ``image_model``: the API decodes the upload, the runner (a custom
``bentoml.Runnable``, no model store needed) scores the float32 pixels.
"""

from __future__ import annotations

from typing import Any

import bentoml
import numpy as np
from bentoml.io import JSON
from bentoml.io import Image as ImageIO

WEIGHTS = np.random.default_rng(0).standard_normal((3, 10)).astype(np.float32)


class PixelRunnable(bentoml.Runnable):
    SUPPORTED_RESOURCES = ("cpu",)
    SUPPORTS_CPU_MULTI_THREADING = False

    @bentoml.Runnable.method(batchable=False)
    def predict(self, pixels: np.ndarray) -> list[float]:
        return (pixels.mean(axis=(0, 1)) / 255.0 @ WEIGHTS).round(4).tolist()  # type: ignore[no-any-return]


pixel_model = bentoml.Runner(PixelRunnable, name="pixel_model")
svc = bentoml.legacy.Service("image_runner", runners=[pixel_model])


@svc.api(input=ImageIO(), output=JSON())
async def score(image: Any) -> list[float]:
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    return await pixel_model.predict.async_run(pixels)  # type: ignore[no-any-return]
