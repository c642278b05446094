"""A vectorisable batchable model: one call costs about the same for 1 row or 64.

That is what makes batching pay on accelerators (a kernel launch and a transfer per call,
whatever the batch); on this CPU-only machine the fixed cost is simulated by a 20 ms wait
per call, around a real (small) matrix product, so the model's batch curve is known.
"""

from __future__ import annotations

import time

import bentoml
import numpy as np

#: Fixed cost of one model call, whatever its batch size.
CALL_COST_S = 0.02


@bentoml.service(traffic={"max_concurrency": 256})
class VectorModel:
    def __init__(self) -> None:
        self.weights = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)

    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=100)
    def embed(self, vectors: np.ndarray) -> np.ndarray:
        time.sleep(CALL_COST_S)
        return np.tanh(vectors.astype(np.float32) @ self.weights)
