"""The vector model as a runner-based Bento: a batchable runner method, a JSON API.

The same model as ``vector_model`` (a 20 ms fixed cost per call around a small matrix
product), as a custom ``bentoml.Runnable`` whose ``embed`` is batchable along rows.
"""

from __future__ import annotations

import time
from typing import Any

import bentoml
import numpy as np
from bentoml.io import JSON, NumpyNdarray

CALL_COST_S = 0.02


class VectorRunnable(bentoml.Runnable):
    SUPPORTED_RESOURCES = ("cpu",)
    SUPPORTS_CPU_MULTI_THREADING = False

    def __init__(self) -> None:
        self.weights = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)

    @bentoml.Runnable.method(batchable=True, batch_dim=0)
    def embed(self, vectors: np.ndarray) -> np.ndarray:
        time.sleep(CALL_COST_S)
        return np.tanh(vectors.astype(np.float32) @ self.weights)


vector_model = bentoml.Runner(
    VectorRunnable, name="vector_model", max_batch_size=64, max_latency_ms=100
)
svc = bentoml.legacy.Service("vector_runner", runners=[vector_model])


@svc.api(input=JSON(), output=NumpyNdarray())
async def embed(body: Any) -> np.ndarray:
    vectors = np.asarray(body["vectors"], dtype=np.float32)
    return await vector_model.embed.async_run(vectors)  # type: ignore[no-any-return]
