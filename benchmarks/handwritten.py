"""Hand-written Ray Serve applications doing the same work as the benchmarked Bentos.

What a Ray Serve user would write without bentoml-ray: the same model or logic, the same
JSON decoding and validation (a 400 for a bad body), the same answers.

- ``iris_single``: one deployment that loads the iris model and answers ``/classify``.
- ``iris_two_hops``: the same split as a runner Bento, an ingress deployment and a model
  deployment called over a ``DeploymentHandle``.
- ``scorer``: the review scorer, an ingress and a preprocessor deployment over a handle.
- ``vector_batched``: the vectorisable model behind ``serve.batch``, set up as a Ray user
  would port the Bento's batch settings: ``max_batch_size=64``, and its
  ``max_latency_ms=100`` as the wait for a batch to fill. (With no wait, as bentoml-ray
  sets it, plain ``serve.batch`` closes a batch per early caller: 6-9x slower at 64
  connections, which says more about that setting than about the request path.)
- ``image_two_hops``: the image Bentos' work, an ingress that parses the multipart upload
  and decodes it, and a model deployment that scores the pixels over a handle.
- ``tokens``: ``/stream`` yields 256 tokens from the ingress, ``/relay`` passes on those
  a source deployment yields over a streaming handle.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from typing import Any

import bentoml
import numpy as np
import pydantic
from PIL import Image
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

ONGOING = 100  # as bentoml-ray's defaults, so that only the request path differs


def _iris_input(body: bytes) -> np.ndarray | JSONResponse:
    try:
        rows = np.asarray(json.loads(body), dtype=np.float64)
    except (ValueError, TypeError) as exc:
        return JSONResponse(f"bad input: {exc}", status_code=400)
    if rows.ndim != 2 or rows.shape[1] != 4:
        return JSONResponse(f"expected shape (-1, 4), got {rows.shape}", status_code=400)
    return rows


@serve.deployment(max_ongoing_requests=ONGOING)
class IrisSingle:
    def __init__(self) -> None:
        self.model = bentoml.sklearn.load_model("iris_clf:latest")

    async def __call__(self, request: Request) -> Any:
        rows = _iris_input(await request.body())
        if isinstance(rows, JSONResponse):
            return rows
        return JSONResponse(self.model.predict(rows).tolist())


@serve.deployment(max_ongoing_requests=ONGOING)
class IrisModel:
    def __init__(self) -> None:
        self.model = bentoml.sklearn.load_model("iris_clf:latest")

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return self.model.predict(rows)  # type: ignore[no-any-return]


@serve.deployment(max_ongoing_requests=ONGOING)
class IrisIngress:
    def __init__(self, model: DeploymentHandle[Any]) -> None:
        self.model = model

    async def __call__(self, request: Request) -> Any:
        rows = _iris_input(await request.body())
        if isinstance(rows, JSONResponse):
            return rows
        return JSONResponse((await self.model.predict.remote(rows)).tolist())


WEIGHTS = {
    "great": 2.0, "good": 1.0, "love": 2.0, "fine": 0.5, "fast": 0.5,
    "bad": -1.0, "slow": -0.5, "awful": -2.0, "broken": -2.0, "hate": -2.0,
}  # fmt: skip


class Reviews(pydantic.BaseModel):
    reviews: list[str]


@serve.deployment(max_ongoing_requests=ONGOING)
class Preprocessor:
    def normalize(self, texts: list[str]) -> list[str]:
        return [" ".join(re.findall(r"[a-z]+", text.lower())) for text in texts]


@serve.deployment(max_ongoing_requests=ONGOING)
class Scorer:
    def __init__(self, preprocessor: DeploymentHandle[Any]) -> None:
        self.preprocessor = preprocessor

    async def __call__(self, request: Request) -> Any:
        try:
            reviews = Reviews.model_validate_json(await request.body()).reviews
        except pydantic.ValidationError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        normalized = await self.preprocessor.normalize.remote(reviews)
        return JSONResponse(
            [sum(WEIGHTS.get(word, 0.0) for word in text.split()) for text in normalized]
        )


class Vectors(pydantic.BaseModel):
    vectors: list[list[float]]


@serve.deployment(max_ongoing_requests=256)  # the Bento's traffic.max_concurrency
class VectorBatched:
    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.weights = rng.standard_normal((16, 16)).astype(np.float32)
        self.batches = self.calls = 0  # a GET answers them: run.py prints batch sizes

    def _embed(self, vectors: np.ndarray) -> np.ndarray:
        time.sleep(0.02)  # the workload's fixed cost per call, as in its service.py
        return np.tanh(vectors.astype(np.float32) @ self.weights)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.1)
    async def embed(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        self.batches, self.calls = self.batches + 1, self.calls + len(batch)
        rows = await asyncio.to_thread(self._embed, np.concatenate(batch))
        return np.split(rows, np.cumsum([len(part) for part in batch])[:-1])

    async def __call__(self, request: Request) -> Any:
        if request.method == "GET":
            return JSONResponse({"batches": self.batches, "calls": self.calls})
        try:
            vectors = np.asarray(Vectors.model_validate_json(await request.body()).vectors)
        except pydantic.ValidationError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if vectors.ndim != 2 or vectors.shape[1] != 16:
            return JSONResponse(f"expected shape (-1, 16), got {vectors.shape}", status_code=400)
        return JSONResponse((await self.embed(vectors)).tolist())


IMAGE_WEIGHTS = np.random.default_rng(0).standard_normal((3, 10)).astype(np.float32)


@serve.deployment(max_ongoing_requests=ONGOING)
class PixelModel:
    def predict(self, pixels: np.ndarray) -> list[float]:
        return (pixels.mean(axis=(0, 1)) / 255.0 @ IMAGE_WEIGHTS).round(4).tolist()  # type: ignore[no-any-return]


@serve.deployment(max_ongoing_requests=ONGOING)
class ImageIngress:
    def __init__(self, model: DeploymentHandle[Any]) -> None:
        self.model = model

    async def __call__(self, request: Request) -> Any:
        async with request.form() as form:
            upload = form.get("image")
            if not isinstance(upload, UploadFile):
                return JSONResponse({"error": "expected a file field 'image'"}, status_code=400)
            data = await upload.read()
        try:
            image = Image.open(io.BytesIO(data))
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
        except OSError as exc:
            return JSONResponse({"error": f"not an image: {exc}"}, status_code=400)
        return JSONResponse(await self.model.predict.remote(pixels))


class TokenRequest(pydantic.BaseModel):
    count: int = 256
    pause_ms: float = 0


async def tokens_of(count: int, pause_ms: float) -> Any:
    for i in range(count):
        if pause_ms:
            await asyncio.sleep(pause_ms / 1000)
        yield f"{i % 100000:05d} "


@serve.deployment(max_ongoing_requests=ONGOING)
class TokenSource:
    async def generate(self, count: int, pause_ms: float) -> Any:
        async for token in tokens_of(count, pause_ms):
            yield token


@serve.deployment(max_ongoing_requests=ONGOING)
class TokenIngress:
    def __init__(self, source: DeploymentHandle[Any]) -> None:
        self.source = source.options(stream=True)

    async def __call__(self, request: Request) -> Any:
        try:
            asked = TokenRequest.model_validate_json(await request.body())
        except pydantic.ValidationError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if request.url.path.endswith("/relay"):
            tokens = self.source.generate.remote(asked.count, asked.pause_ms)
        else:
            tokens = tokens_of(asked.count, asked.pause_ms)
        return StreamingResponse(tokens, media_type="text/plain")


# ``options`` go to every deployment of the application (the cold-start benchmark's
# autoscaling from zero replicas).


def iris_single(**options: Any) -> Application:
    return IrisSingle.options(**options).bind()


def iris_two_hops(**options: Any) -> Application:
    return IrisIngress.options(**options).bind(IrisModel.options(**options).bind())


def scorer(**options: Any) -> Application:
    return Scorer.options(**options).bind(Preprocessor.options(**options).bind())


def vector_batched() -> Application:
    return VectorBatched.bind()


def image_two_hops() -> Application:
    return ImageIngress.bind(PixelModel.bind())


def tokens() -> Application:
    return TokenIngress.bind(TokenSource.bind())
