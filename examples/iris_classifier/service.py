"""A runner-based ("legacy") BentoML service: one runner, one API.

This is BentoML's classic quickstart, kept as it is so that it shows what bentoml-ray
serves unchanged. The input declares its dtype and shape, so a malformed request is
refused with a 400 before it reaches the model.
"""

from __future__ import annotations

import bentoml
import numpy as np
from bentoml.io import NumpyNdarray

iris_clf_runner = bentoml.sklearn.get("iris_clf:latest").to_runner()

svc = bentoml.legacy.Service("iris_classifier", runners=[iris_clf_runner])


@svc.api(
    input=NumpyNdarray(dtype="float64", shape=(-1, 4), enforce_shape=True),
    output=NumpyNdarray(),
)
async def classify(input_series: np.ndarray) -> np.ndarray:
    return await iris_clf_runner.predict.async_run(input_series)
