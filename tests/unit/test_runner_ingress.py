"""The public ingress of a runner-based service: the direct path and the full app answer alike.

A real legacy service's ingress, in process (Starlette's test client; the same app is
served through Ray in ``integration/test_serving`` and ``test_bad_input``). A request with
a declared body length goes straight to its endpoint; the same request streamed in chunks
takes the full app. Both must answer alike, for good requests and bad ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import bentoml
import pytest
from _support import picked_route
from bentoml.io import JSON, NumpyNdarray, Text
from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.testclient import TestClient

from bentoml_ray._ingress.body_limit import LimitRequestBody
from bentoml_ray._ingress.frame import IngressFrame
from bentoml_ray._ingress.gate import PublicGate
from bentoml_ray._ingress.guard import read_head
from bentoml_ray._runners import api_server
from bentoml_ray._runners.api_server import runner_ingress

#: The API server's traffic timeout in these tests, in seconds.
TIMEOUT = 0.5


def _service(*, with_middleware: bool = False) -> Any:
    svc = bentoml.legacy.Service("dispatch_probe")

    @svc.api(input=NumpyNdarray(dtype="float64", shape=(-1, 2), enforce_shape=True),
             output=NumpyNdarray())  # fmt: skip
    def double(rows: Any) -> Any:
        return rows * 2

    @svc.api(input=Text(), output=Text(), route="/metrics")
    def shadowed(text: str) -> str:  # GET is the ingress's /metrics; a POST gets this API
        return text

    @svc.api(input=JSON(), output=JSON(), route="v1/echo")
    def echo(body: Any) -> Any:
        return body

    @svc.api(input=JSON(), output=JSON(), route="v1/echo")
    def echo_again(body: Any) -> Any:  # a second API at the same path: the first one wins
        return {"again": body}

    @svc.api(input=JSON(), output=JSON(), route="items/{item}")
    def item(body: Any, ctx: bentoml.Context) -> Any:
        return {"item": ctx.request.path_params["item"]}

    @svc.api(input=JSON(), output=JSON(), route="items/latest")
    def latest(body: Any) -> Any:  # items/{item} comes first and answers this path
        return {"latest": body}

    @svc.api(input=JSON(), output=JSON())
    async def stuck(body: Any) -> Any:  # past the timeout, and hides the cancel from it
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise RuntimeError("cancelled") from None
        return body

    if with_middleware:

        class Stamp(BaseHTTPMiddleware):
            async def dispatch(self, request: Any, call_next: Any) -> Any:
                response = await call_next(request)
                response.headers["x-stamp"] = "1"
                return response

        svc.add_asgi_middleware(Stamp)
    return svc


def _gate(app: Starlette) -> PublicGate:
    """The ingress's PublicGate, as its middleware stack builds it."""
    # Counted and timed in one frame, then gated.
    assert [m.cls for m in app.user_middleware] == [IngressFrame, PublicGate]
    return PublicGate(app.router, **app.user_middleware[1].kwargs)


def _goes_direct(gate: PublicGate, scope: dict[str, Any]) -> bool:
    return gate.direct_route(scope, read_head(scope)) is not None


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(api_server, "api_server_timeout", lambda: TIMEOUT)
        app = runner_ingress(_service(), "/")
    with TestClient(app) as test_client:
        yield test_client


def _chunked(body: bytes) -> Iterator[bytes]:
    yield body  # a generator body: no Content-Length, so the full app takes it


def test_only_unambiguous_api_paths_skip_the_router() -> None:
    gate = _gate(runner_ingress(_service(), "/"))
    assert set(gate.direct) == {"/double", "/v1/echo", "/metrics", "/stuck"}
    prefixed = _gate(runner_ingress(_service(), "/iris"))
    assert set(prefixed.direct) == {"/iris/double", "/iris/v1/echo", "/iris/metrics", "/iris/stuck"}
    # The API at /metrics takes its POSTs directly; a GET is the metrics guard's.
    assert _goes_direct(gate, _scope("/metrics", content_length="4"))
    assert not _goes_direct(gate, _scope("/metrics", method="GET", content_length="0"))


def test_direct_api_routes_go_first_and_the_router_picks_as_before() -> None:
    svc = _service()
    routes = _gate(runner_ingress(svc, "/")).service.routes
    assert [route.name for route in routes[:4]] == ["double", "shadowed", "echo", "stuck"]
    # BentoML's order: the built-in routes, then the APIs as declared.
    apis = list(svc.apis)
    declared = [r for r in routes if r.name not in apis]
    declared += sorted((r for r in routes if r.name in apis), key=lambda r: apis.index(r.name))
    for method in ("GET", "POST"):
        for path in ["/", "/double", "/v1/echo", "/items/latest", "/items/7", "/stuck",
                     "/metrics", "/static_content/x.css", "/livez", "/nowhere"]:  # fmt: skip
            assert picked_route(routes, method, path) == picked_route(declared, method, path), path


def test_a_service_with_its_own_middleware_has_every_request_routed() -> None:
    app = runner_ingress(_service(with_middleware=True), "/")
    assert _gate(app).direct == {}
    with TestClient(app) as client:
        response = client.post("/double", json=[[1, 2]])
    assert response.json() == [[2, 4]] and response.headers["x-stamp"] == "1"


@pytest.mark.parametrize(
    ("path", "body", "content_type"),
    [
        ("/double", b"[[1, 2]]", "application/json"),
        ("/double", b"[[1, 2, 3]]", "application/json"),  # wrong shape: 400
        ("/double", b'[["a", "b"]]', "application/json"),  # wrong dtype: 400
        ("/double", b"[[1, 2]", "application/json"),  # malformed JSON: 400
        ("/double", b"", "application/json"),  # empty: 400
        ("/double", b"[[1, 2]]", "text/csv"),  # not JSON: 415
        ("/double", b"\x80\x04", "application/vnd.bentoml+pickle"),  # internal: 415
        ("/v1/echo", b'{"a": 1}', "application/json"),
        ("/items/latest", b"{}", "application/json"),  # the route with a parameter answers
        ("/stuck", b"{}", "application/json"),  # 504, though the API raised when cancelled
        ("/metrics", b"text", "text/plain"),  # the API declared at /metrics, past the GET
    ],
)
def test_both_ways_answer_alike(
    client: TestClient, path: str, body: bytes, content_type: str
) -> None:
    headers = {"content-type": content_type}
    direct = client.post(path, content=body, headers=headers)
    routed = client.post(path, content=_chunked(body), headers=headers)
    assert "content-length" not in routed.request.headers
    assert (direct.status_code, direct.content) == (routed.status_code, routed.content)
    assert direct.headers["content-type"] == routed.headers["content-type"]


def test_what_each_way_answers(client: TestClient) -> None:
    assert client.post("/double", json=[[1, 2]]).json() == [[2, 4]]
    assert client.post("/v1/echo", json={"a": 1}).json() == {"a": 1}
    assert client.post("/items/latest", json={}).json() == {"item": "latest"}
    text = {"content-type": "text/plain"}
    assert client.post("/metrics", content=b"hi", headers=text).text == "hi"
    assert "process_" in client.get("/metrics").text  # the replica's registry
    timed_out = client.post("/stuck", json={})
    assert timed_out.status_code == 504, timed_out.text
    assert client.get("/double").status_code == 405  # a method the API does not take
    assert client.get("/livez").status_code == 200
    assert client.post("/double", json=[[1, 2, 3]]).status_code == 400
    pickle = {"content-type": "application/vnd.bentoml+pickle"}
    refused = client.post("/double", content=b"\x80", headers=pickle)
    assert refused.status_code == 415 and "internal to BentoML" in refused.json()


def _scope(path: str = "/double", method: str = "POST", **headers: str) -> dict[str, Any]:
    raw = [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]
    return {"type": "http", "path": path, "root_path": "", "method": method, "headers": raw}


def test_which_requests_go_straight_to_their_endpoint() -> None:
    gate = _gate(runner_ingress(_service(), "/"))
    (limit,) = [guard.limit for guard in gate.guards if isinstance(guard, LimitRequestBody)]
    assert limit is not None
    assert _goes_direct(gate, _scope(content_length="8"))
    assert _goes_direct(gate, _scope(content_length=str(limit)))
    # Under a Serve route prefix, which Serve puts in root_path.
    assert _goes_direct(gate, {**_scope("/iris/double", content_length="8"), "root_path": "/iris"})
    for refused in (
        _scope(),  # chunked
        _scope(content_length=str(limit + 1)),  # the full app answers 413
        _scope(content_length="8", content_type="application/vnd.bentoml+pickle"),  # 415
        _scope(content_length="8", transfer_encoding="chunked"),  # counted as it streams
        _scope(method="GET", content_length="0"),  # 405
        _scope("/metrics", method="GET", content_length="0"),  # the ingress's /metrics
        _scope("/double/", content_length="8"),  # Starlette's redirect
    ):
        assert not _goes_direct(gate, refused), refused


@pytest.mark.parametrize("prefix", ["/", "/iris"])
def test_an_endpoint_can_read_what_starlette_puts_in_the_scope(prefix: str) -> None:
    svc = _service()

    @svc.api(input=JSON(), output=JSON(), route="/scope")
    def scope_keys(_: Any, ctx: bentoml.Context) -> Any:
        request = ctx.request
        route = request.scope.get("route")
        return {
            "path_params": request.path_params,
            "app_has_the_api": any(r.name == "scope_keys" for r in request.app.routes),
            "router_is_the_service_apps": request.scope.get("router") is request.app.router,
            "route": getattr(route, "path", None),
            "root_path": request.scope.get("root_path"),
            "app_root_path": request.scope.get("app_root_path"),
            "url": str(request.url),
        }

    path = prefix.rstrip("/") + "/scope"
    with TestClient(runner_ingress(svc, prefix)) as own_client:
        direct = own_client.post(path, json={})
        routed = own_client.post(path, content=_chunked(b"{}"))
    assert direct.status_code == 200, direct.text
    assert direct.json() == routed.json()
    assert direct.json()["route"] == "/scope" and direct.json()["app_has_the_api"]
    # The router is the ingress's, the outermost, as Starlette's routing leaves it.
    assert direct.json()["router_is_the_service_apps"] is False


def test_the_services_own_middlewares_see_its_lifespan() -> None:
    """The mounted service app's lifespan runs through its middlewares, as when it is the app."""
    svc = _service()
    seen: list[str] = []

    class Watch:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            seen.append(scope["type"])
            await self.app(scope, receive, send)

    svc.add_asgi_middleware(Watch)
    with TestClient(runner_ingress(svc, "/iris")) as own_client:
        assert own_client.get("/iris/readyz").status_code == 200  # the startup hooks ran
    assert seen == ["lifespan", "http"]
