"""CPU instructions per request, counted by valgrind: a measure this noisy machine cannot blur.

    python benchmarks/instructions.py                 # 5-7 minutes on 2 cores

Requests per second on a shared 2-core machine move by 20 % between runs of the same code,
so a change worth a few percent of the per-request work does not show in ``run.py``.
Here requests run one at a time through each ASGI app in process (no Ray, no network)
under valgrind's callgrind, counting only around the measured requests; the counts
repeat to within about 1 %. What Ray adds per request (its proxy, its replica wrapper,
its handles) is the same for every target and is not counted.

Targets, iris classifier (runner-based):
  bentoml-ray         the API server's app with the runner embedded, as in its replica
  bentoml-ray routed  the same requests with a chunked body: through Starlette's router
  bentoml-ray own layer
                      ``bentoml-ray`` without two pieces of BentoML's own per-request
                      work, which ``bentoml serve`` does too: its request context, and the
                      joblib backend its sklearn runnable enters around each model call
                      (both replaced by no-ops): what bentoml-ray's layer itself adds
  hand-written        ``handwritten.iris_single``'s work as a plain deployment callable:
                      a ``Request`` in, a ``Response`` out, as Ray's replica calls it
Targets, review scorer (1.2+, ``score``), the ingress side of its two hops:
  bentoml-ray 1.2+    the root replica's app (BentoML's, as bentoml-ray runs it), batching off
  hand-written scorer ``handwritten.scorer``'s ingress, a plain deployment callable too
Both scorers call a stand-in for the preprocessor's handle that answers at once: what
happens across the handle is Ray's and the preprocessor's work, the same for both.

Needs valgrind (``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
IRIS = ("/classify", json.dumps([[5.9, 3.0, 5.1, 1.8]]).encode())
SCORER = ("/score", json.dumps({"reviews": ["Great phone, love it!", "awful and SLOW"]}).encode())
#: Each target's request, and the hand-written target it is compared with.
TARGETS = {
    "bentoml-ray": (IRIS, "hand-written"),
    "bentoml-ray routed": (IRIS, "hand-written"),
    "bentoml-ray own layer": (IRIS, "hand-written"),
    "hand-written": (IRIS, "hand-written"),
    "bentoml-ray 1.2+": (SCORER, "hand-written scorer"),
    "hand-written scorer": (SCORER, "hand-written scorer"),
}
WARM_UP = 200

ASGIApp = Callable[..., Awaitable[None]]


class PreprocessorStandIn:
    """Stands in for the preprocessor deployment's handle: each call answers at once.

    ``call.remote`` is how bentoml-ray's service proxy calls a dependency's API, and
    ``normalize.remote`` how the hand-written ingress does; both get the normalised texts.
    """

    def __init__(self) -> None:
        self.call = self._Method(lambda name, args, kwargs: (args or [*kwargs.values()])[0])
        self.normalize = self._Method(lambda texts: texts)

    def options(self, **_: Any) -> PreprocessorStandIn:
        return self

    class _Method:
        def __init__(self, texts_of: Callable[..., list[str]]) -> None:
            self.texts_of = texts_of

        def remote(self, *args: Any) -> Any:
            from handwritten import Preprocessor

            texts = self.texts_of(*args)
            done: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
            done.set_result(Preprocessor.func_or_class.normalize(None, texts))
            return done


def _app(target: str) -> ASGIApp:
    import bentoml
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    if target == "hand-written":
        from handwritten import _iris_input

        model = bentoml.sklearn.load_model("iris_clf:latest")

        async def classify(request: Request) -> Response:
            rows = _iris_input(await request.body())
            if isinstance(rows, JSONResponse):
                return rows
            return JSONResponse(model.predict(rows).tolist())

        return _DeploymentCallable(classify)

    if target == "hand-written scorer":
        from handwritten import Scorer

        return _DeploymentCallable(Scorer.func_or_class(PreprocessorStandIn()).__call__)

    if target == "bentoml-ray 1.2+":
        from bentoml_ray._bento.source import resolve_target
        from bentoml_ray._replica.calls import CallTarget
        from bentoml_ray._services.deployments import ServiceHost, service_ingress

        source, root = resolve_target("review_scorer:latest")
        stand_in = CallTarget(PreprocessorStandIn())  # type: ignore[arg-type]
        # What the root replica builds, batching off: ``serve.batch`` runs only in Ray.
        host = ServiceHost(
            source, {"Preprocessor": stand_in}, None, root.name, {}, route_prefix="/"
        )
        return service_ingress(host.factory, "/")

    if target == "bentoml-ray own layer":
        _without_bentoml_request_work()

    from bentoml_ray._runners.api_server import runner_ingress
    from bentoml_ray._runners.local_runner import LocalRunnerHandle

    # Valgrind runs code about 50 times slower: keep the model call inline, where it runs
    # at full speed, instead of letting its timing send it to the worker thread.
    svc = bentoml.load("iris_classifier:latest")
    for runner in svc.runners:
        runner.init_client(LocalRunnerHandle, {}, "inline")
    return runner_ingress(svc, "/")


class _DeploymentCallable:
    """What Ray's replica does with a hand-written deployment's ``__call__`` (no ASGI app,
    no router): a ``Request`` of the scope in, the ``Response`` it returns sent."""

    def __init__(self, handler: Callable[[Any], Awaitable[Any]]) -> None:
        self.handler = handler

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        from starlette.requests import Request

        if scope["type"] == "lifespan":  # nothing to start: answer the lifespan's messages
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        response = await self.handler(Request(scope, receive))
        await response(scope, receive, send)


def _without_bentoml_request_work() -> None:
    """BentoML's request context and its sklearn runnable's joblib backend, as no-ops.

    For this process only, to measure: both are BentoML internals, which bentoml-ray itself
    reaches only through ``_bentoml_internals``.
    """
    import contextlib

    import _bentoml_impl.frameworks.sklearn as sklearn_runnable
    from bentoml._internal.context import ServiceContext

    def in_request(self: ServiceContext, request: Any) -> contextlib.nullcontext[Any]:
        return contextlib.nullcontext(self)

    for owner, name in ((ServiceContext, "in_request"), (sklearn_runnable, "parallel_backend")):
        if not hasattr(owner, name):  # else the no-op would silently replace nothing
            raise RuntimeError(f"BentoML no longer has {owner.__name__}.{name}: update this target")
    ServiceContext.in_request = in_request  # type: ignore[assignment,method-assign]
    sklearn_runnable.parallel_backend = lambda **_: contextlib.nullcontext()  # type: ignore[attr-defined]


async def _serve_requests(app: ASGIApp, target: str, count: int) -> None:
    (path, body), _ = TARGETS[target]
    chunked = target.endswith("routed")
    length = [] if chunked else [(b"content-length", str(len(body)).encode())]
    headers = [(b"content-type", b"application/json"), *length]
    for _ in range(count):
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": path,
                 "raw_path": path.encode(), "root_path": "", "query_string": b"",
                 "headers": headers, "client": ("127.0.0.1", 1),
                 "server": ("127.0.0.1", 80)}  # fmt: skip
        await app(scope, receive, send)
        if sent[0]["status"] != 200:
            raise RuntimeError(f"the app answered {sent}")


async def _start(app: ASGIApp) -> asyncio.Future[None]:
    """Run the app's lifespan startup; the lifespan goes on in the task returned."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    lifespan = {"type": "lifespan", "asgi": {"version": "3.0"}}
    task = asyncio.ensure_future(app(lifespan, inbox.get, outbox.put))
    message = await outbox.get()
    if message["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"startup failed: {message}")
    return task


def child(target: str, count: int, counting: bool = True) -> None:
    """Under valgrind: serve, with counting on only around the measured requests."""

    def callgrind(*flags: str) -> None:
        if counting:
            subprocess.run(["callgrind_control", *flags, str(os.getpid())], check=True,
                           capture_output=True)  # fmt: skip

    async def main() -> None:
        app = _app(target)
        lifespan = await _start(app)
        await _serve_requests(app, target, WARM_UP)
        gc.collect()
        gc.freeze()  # a full collection landing in one run and not another is noise here
        callgrind("-i", "on")
        await _serve_requests(app, target, count)
        callgrind("-i", "off")
        lifespan.cancel()

    asyncio.run(main())


def count_instructions(target: str, count: int, env: dict[str, str], work: pathlib.Path) -> float:
    log = work / f"{target.replace(' ', '-')}.log"
    command = [
        "valgrind", "--tool=callgrind", "--instr-atstart=no",
        f"--callgrind-out-file={work / 'callgrind.%p'}", f"--log-file={log}",
        sys.executable, __file__, "--child", target, "--requests", str(count),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:  # BentoML's deprecation notes fill stderr: shown only then
        raise RuntimeError(f"{target} failed:\n{done.stderr[-3000:]}")
    collected = re.findall(r"Collected\s*:\s*([\d,]+)", log.read_text())
    if not collected:
        raise RuntimeError(f"no count in {log}")
    return int(collected[-1].replace(",", "")) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="measured per target")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--no-count", action="store_true", help=argparse.SUPPRESS)  # the tests
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    if args.child:
        # Several targets, comma-separated, run one after another only uncounted (the tests).
        for target in args.child.split(",") if args.no_count else [args.child]:
            child(target, args.requests, counting=not args.no_count)
        return
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("valgrind is needed: apt-get install valgrind")
    from run import build_bentos

    with tempfile.TemporaryDirectory(prefix="bentoml-ray-instructions-") as tmp:
        work = pathlib.Path(tmp)
        # The caller's PYTHONPATH kept after ours: another checkout's src/ can be measured.
        path = os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])
        env = {**os.environ, "BENTOML_HOME": str(work / "home"), "PYTHONPATH": path}
        build_bentos(env, ["iris", "composed"])
        counts = {target: count_instructions(target, args.requests, env, work)
                  for target in TARGETS}  # fmt: skip
    print(f"CPU instructions per request ({args.requests} requests each, in process):")
    for target, value in counts.items():
        hand = TARGETS[target][1]
        print(
            f"  {target:22s} {value / 1e6:6.3f} million   {hand} / this: {counts[hand] / value:.2f}"
        )


if __name__ == "__main__":
    main()
