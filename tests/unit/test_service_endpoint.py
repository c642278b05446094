"""The planned endpoint of a 1.2+ API answers byte for byte as BentoML's own endpoint.

In process, no Ray: the same root ingress built twice, once with the planned endpoints
(``_services.endpoint``) and once with BentoML's endpoint on every API, and the same
requests sent to both. Status, the header list (names, values, order) and the body bytes
must be equal, for good input and bad, every kind of API function, input and output.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
from collections.abc import AsyncGenerator, Generator, Iterator
from typing import Annotated, Any

import bentoml
import numpy as np
import pytest
from _support import bentoml_config_restored
from bentoml.exceptions import InvalidArgument, NotFound
from bentoml.validators import ContentType, DType, Shape
from PIL import Image
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.testclient import TestClient

from bentoml_ray._services.app_factory import RayServiceAppFactory
from bentoml_ray._services.deployments import service_ingress
from bentoml_ray._services.endpoint import CompiledEndpoint

_DOCUMENTS = pathlib.Path(tempfile.mkdtemp(prefix="endpoint-documents-"))


class Point(BaseModel):
    x: float
    y: float = 0.0


class Scored(BaseModel):
    label: str
    score: float


@bentoml.service
class Endpoints:
    @bentoml.api
    def text(self, text: str) -> str:
        return text.upper()

    @bentoml.api
    async def scale(self, rows: list[list[float]], factor: float = 2.0) -> list[list[float]]:
        return [[value * factor for value in row] for row in rows]

    @bentoml.api
    def mapping(self, keys: list[str]) -> dict[str, int]:
        return {key: len(key) for key in keys}

    @bentoml.api
    def score(self, point: Point) -> Scored:  # a model in, a model out
        return Scored(label="far" if point.x > 1 else "near", score=point.x + point.y)

    @bentoml.api(input_spec=Point)  # a root-typed input: the model is the whole body
    def root_point(self, **point: Any) -> float:
        return float(point["x"])

    @bentoml.api
    def raw_bytes(self, size: int) -> bytes:
        return b"\x00\x01" * size

    @bentoml.api
    def answer(self, kind: str) -> Any:
        if kind == "response":
            return PlainTextResponse("plain", status_code=202, headers={"x-own": "1"})
        if kind == "json":
            return JSONResponse({"mine": True})
        return {"kind": kind}

    @bentoml.api
    def fails(self, how: str) -> str:
        if how == "invalid":
            raise InvalidArgument("the argument was wrong")
        if how == "missing":
            raise NotFound("no such thing")
        if how == "validation":
            Point.model_validate({"x": "not a number"})
        raise ValueError("the API's own error")

    @bentoml.api
    def with_ctx(self, text: str, ctx: bentoml.Context) -> str:
        ctx.response.status_code = 201
        ctx.response.headers["x-ctx"] = "yes"
        return text

    @bentoml.api
    def count(self, upto: int) -> Generator[str, None, None]:
        for number in range(upto):
            yield f"{number},"

    @bentoml.api
    async def acount(self, upto: int) -> AsyncGenerator[str, None]:
        if upto < 0:
            raise InvalidArgument("upto must be >= 0")  # before the first chunk: the answer
        for number in range(upto):
            if number == 2 and upto > 5:
                raise ValueError("mid-stream")  # after it: the stream ends, logged
            yield f"{number};"

    @bentoml.api
    def points(self, upto: int) -> Generator[Point, None, None]:
        for number in range(upto):
            yield Point(x=number)

    @bentoml.api
    def size_of(self, file: pathlib.Path) -> int:
        return len(file.read_bytes())

    @bentoml.api
    def image(self, side: int) -> Image.Image:
        return Image.new("RGB", (side, side), "red")

    @bentoml.api
    def document(self, name: str) -> Annotated[pathlib.Path, ContentType("text/plain")]:
        path = _DOCUMENTS / f"{name}.txt"  # one file, one time: the same ETag both ways
        path.write_text("hello")
        os.utime(path, (1_700_000_000, 1_700_000_000))
        return path

    @bentoml.api(batchable=True)
    def doubled(self, values: list[float]) -> list[float]:
        return [value * 2 for value in values]

    @bentoml.api
    def tensor(self, rows: np.ndarray, as_list: bool = False) -> np.ndarray:
        doubled = rows * 2
        return doubled.tolist() if as_list else doubled  # a list: BentoML makes it an array

    @bentoml.api(batchable=True)
    def tensors(self, rows: np.ndarray) -> np.ndarray:
        return rows.astype(np.float32) / 3

    @bentoml.api
    def typed_tensor(self, n: int) -> Annotated[np.ndarray, DType("float32"), Shape((-1, 2))]:
        return np.ones((n, 2 if n < 3 else 3), dtype=np.float32)  # n >= 3: served all the same

    @bentoml.api
    def defaults(self, n: int = Field(default=3, ge=0), tag: str = "t") -> str:
        return f"{tag}{n}"


_bentoml_config_restored = pytest.fixture(autouse=True, scope="module")(bentoml_config_restored)


def _ingress(planned: bool) -> Starlette:
    service: Any = Endpoints
    service.inject_config()
    factory = RayServiceAppFactory(service, is_main=True, batching={})
    if not planned:
        factory.planned_endpoint = lambda route: None  # type: ignore[method-assign]
    return service_ingress(factory, "/")


@pytest.fixture(scope="module")
def clients() -> Iterator[tuple[TestClient, TestClient]]:
    with TestClient(_ingress(True)) as planned, TestClient(_ingress(False)) as bentomls:
        yield planned, bentomls


JSON = "application/json"

#: (path, body, content type): valid and invalid input for every kind of API.
CORPUS: list[tuple[str, bytes, str]] = [
    ("/text", b'{"text": "hi"}', JSON),
    ("/text", b'{"text": "hi"}', "application/json; charset=utf-8"),
    ("/text", b'{"text": "hi"}', "text/plain"),  # BentoML decodes an unknown type as JSON
    ("/text", b'{"text": 5}', JSON),  # wrong type: 400
    ("/text", b'{"text": "hi"', JSON),  # malformed JSON: 400
    ("/text", b"", JSON),  # no body: the missing field's 400
    ("/text", b"[1, 2]", JSON),  # not an object
    ("/text", b'{"text": "hi", "extra": 1}', JSON),
    ("/scale", b'{"rows": [[1, 2.5]]}', JSON),
    ("/scale", b'{"rows": [[1, 2]], "factor": 3}', JSON),
    ("/scale", b'{"rows": [["a"]]}', JSON),
    ("/mapping", b'{"keys": ["a", "bcd"]}', JSON),
    ("/score", b'{"point": {"x": 2, "y": 0.5}}', JSON),
    ("/score", b'{"point": {"y": 1}}', JSON),  # a nested missing field
    ("/root_point", b'{"x": 1.5}', JSON),
    ("/root_point", b'{"x": "no"}', JSON),
    ("/root_point", b"not json", JSON),
    ("/raw_bytes", b'{"size": 3}', JSON),
    ("/answer", b'{"kind": "response"}', JSON),
    ("/answer", b'{"kind": "json"}', JSON),
    ("/answer", b'{"kind": "other"}', JSON),
    ("/fails", b'{"how": "invalid"}', JSON),
    ("/fails", b'{"how": "missing"}', JSON),
    ("/fails", b'{"how": "validation"}', JSON),
    ("/fails", b'{"how": "value"}', JSON),
    ("/with_ctx", b'{"text": "c"}', JSON),
    ("/count", b'{"upto": 4}', JSON),
    ("/acount", b'{"upto": 4}', JSON),
    ("/acount", b'{"upto": -1}', JSON),
    ("/acount", b'{"upto": 9}', JSON),
    ("/acount", b'{"upto": 0}', JSON),
    ("/points", b'{"upto": 3}', JSON),
    ("/count", b'{"upto": "x"}', JSON),
    ("/image", b'{"side": 2}', JSON),
    ("/document", b'{"name": "d"}', JSON),
    ("/doubled", b'{"values": [1, 2]}', JSON),
    ("/doubled", b'{"values": "x"}', JSON),
    ("/tensor", b'{"rows": [[1, 2.5], [3, 4]]}', JSON),
    ("/tensor", b'{"rows": [[1, 2]], "as_list": true}', JSON),
    ("/tensor", b'{"rows": 7}', JSON),
    ("/tensor", b'{"rows": "x"}', JSON),
    ("/tensors", b'{"rows": [[1, 2], [3, 4]]}', JSON),
    ("/typed_tensor", b'{"n": 2}', JSON),
    ("/typed_tensor", b'{"n": 3}', JSON),  # the wrong shape: BentoML serves it as it is
    ("/defaults", b"{}", JSON),
    ("/defaults", b'{"n": -1}', JSON),
    ("/defaults", b'{"n": 1, "tag": "z"}', JSON),
]


@pytest.mark.parametrize(("path", "body", "content_type"), CORPUS)
def test_the_planned_endpoint_answers_as_bentomls(
    clients: tuple[TestClient, TestClient], path: str, body: bytes, content_type: str
) -> None:
    planned, bentomls = clients
    headers = {"content-type": content_type}
    ours = planned.post(path, content=body, headers=headers)
    theirs = bentomls.post(path, content=body, headers=headers)
    assert ours.status_code == theirs.status_code
    assert ours.headers.raw == theirs.headers.raw
    assert ours.content == theirs.content


def test_a_file_input_answers_as_bentomls(clients: tuple[TestClient, TestClient]) -> None:
    """Multipart (a file field) goes to BentoML's endpoint: no plan covers it."""
    answers = [
        client.post("/size_of", files={"file": ("f.bin", b"12345", "application/octet-stream")})
        for client in clients
    ]
    assert answers[0].status_code == 200 and answers[0].text == "5"
    assert [(a.status_code, a.headers.raw, a.content) for a in answers[:1]] == [
        (a.status_code, a.headers.raw, a.content) for a in answers[1:]
    ]


def test_what_the_plan_covers(clients: tuple[TestClient, TestClient]) -> None:
    """JSON APIs and streams get a planned endpoint; ``ctx`` and files (in or out) keep
    BentoML's. The ingress compared above sends its direct requests to them."""
    service: Any = Endpoints
    service.inject_config()
    factory = RayServiceAppFactory(service, is_main=True, batching={})
    planned = {name for name in service.apis if CompiledEndpoint.plan(factory, name)}
    kept = {"with_ctx", "size_of", "image", "document"}
    assert planned == set(service.apis) - kept
    gates = [client.app.middleware_stack.app for client in clients]  # type: ignore[attr-defined]
    assert [len(gate.endpoints) for gate in gates] == [len(planned), 0]


def test_background_tasks_added_to_the_context_run_after_the_answer() -> None:
    """An API without ``ctx`` may still reach the request's context through the service."""
    ran: list[str] = []

    @bentoml.service
    class Background:
        @bentoml.api
        def go(self, text: str) -> str:
            bentoml_context: Any = Background.context  # type: ignore[attr-defined]
            bentoml_context.response.background.add_task(ran.append, text)
            return text

    service: Any = Background
    service.inject_config()
    factory = RayServiceAppFactory(service, is_main=True, batching={})
    assert CompiledEndpoint.plan(factory, "go") is not None
    with TestClient(service_ingress(factory, "/")) as client:
        assert client.post("/go", json={"text": "later"}).text == "later"
    assert ran == ["later"]
