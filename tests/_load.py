"""Steady HTTP load from a background thread, and finding a deployment's replicas.

The fault, soak and redeploy tests keep traffic flowing while they kill replicas or
redeploy, then count what the clients saw. ``Load`` is a closed loop: each of its
connections sends its next request once the previous one was answered (and ``pause_s``
has passed, for a gentler load).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import pathlib
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx


@dataclasses.dataclass
class Outcome:
    start: float
    end: float
    status: int  # 0: no HTTP answer at all (connection reset, timeout)
    detail: str = ""


class Load:
    """``connections`` clients POSTing ``body`` (JSON) to ``url`` until the block ends.

    Each client waits ``pause_s`` after each answer: with a pause, the load leaves the
    machine room to start replicas.
    """

    def __init__(
        self,
        url: str,
        body: Any,
        connections: int,
        *,
        check: Callable[[httpx.Response], bool] | None = None,
        timeout_s: float = 60.0,
        pause_s: float = 0.0,
        abandon: bool = False,
    ) -> None:
        self.url = url
        self.body = body
        self.connections = connections
        self.check = check
        self.timeout_s = timeout_s
        self.pause_s = pause_s
        #: Cancel the requests still running when the block ends, rather than wait for
        #: their answers (a test that is done counting need not wait out a replacement).
        self.abandon = abandon
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients: asyncio.Future[Any] | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.abandon and self._loop is not None and self._clients is not None:
            with contextlib.suppress(RuntimeError):  # every client had ended: the loop closed
                self._loop.call_soon_threadsafe(self._clients.cancel)
        self._thread.join(self.timeout_s + 30)
        assert not self._thread.is_alive(), "the load did not stop"

    async def _client(self, client: httpx.AsyncClient) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                response = await client.post(self.url, json=self.body)
                ok = response.status_code == 200 and (self.check is None or self.check(response))
                status = response.status_code if ok or response.status_code != 200 else 599
                detail = "" if ok else response.text[:300]
            except httpx.HTTPError as exc:
                status, detail = 0, f"{type(exc).__name__}: {exc}"[:300]
            self.outcomes.append(Outcome(start, time.monotonic(), status, detail))
            if self.pause_s:
                await asyncio.sleep(self.pause_s)

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=self.connections)
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits) as client:
            self._loop = asyncio.get_running_loop()
            self._clients = asyncio.gather(*(self._client(client) for _ in range(self.connections)))
            with contextlib.suppress(asyncio.CancelledError):
                await self._clients

    @property
    def failures(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.status != 200]

    def wait_for(self, count: int, bound_s: float = 120.0) -> None:
        """Block until ``count`` requests were answered (bounded)."""
        self.wait_until(lambda: len(self.outcomes) >= count, bound_s, f"{count} answers")

    def wait_until(self, done: Callable[[], bool], bound_s: float, what: str) -> None:
        """Block until ``done()`` holds (bounded): a condition on the outcomes so far."""
        deadline = time.monotonic() + bound_s
        while not done():
            assert time.monotonic() < deadline, f"no {what} in {bound_s:.0f} s: {self.summary()}"
            time.sleep(0.05)

    def summary(self) -> str:
        failed = self.failures
        return f"{len(self.outcomes)} requests, {len(failed)} failed" + (
            f"; first failures: {[(f.status, f.detail) for f in failed[:3]]}" if failed else ""
        )


def replica_actor_names(app: str, deployment: str) -> list[str]:
    """The named actors of ``deployment``'s replicas in Serve application ``app``.

    Ray Serve names each replica actor ``SERVE_REPLICA::<app>#<deployment>#<id>`` in the
    ``serve`` namespace; ``ray.util.list_named_actors`` is public and needs no dashboard.
    """
    import ray

    prefix = f"SERVE_REPLICA::{app}#{deployment}#"
    return sorted(
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["name"].startswith(prefix)
    )


def running_replicas(app: str, deployment: str) -> int:
    from ray import serve

    status = serve.status().applications[app].deployments[deployment]
    return int(status.replica_states.get("RUNNING", 0))


def kill_replica(name: str) -> None:
    """Kill a replica actor the hard way (no graceful shutdown), as a crash would."""
    import ray

    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)


def is_replaced(app: str, deployment: str, before: list[str]) -> bool:
    """A replica not in ``before`` exists, and as many run as ``before`` had."""
    fresh = set(replica_actor_names(app, deployment)) - set(before)
    return bool(fresh) and running_replicas(app, deployment) >= len(before)


def wait_replaced(app: str, deployment: str, before: list[str], bound_s: float) -> float:
    """Seconds until a new replica (not in ``before``) runs and the count is back (bounded)."""
    start = time.monotonic()
    while True:
        if is_replaced(app, deployment, before):
            return time.monotonic() - start
        assert time.monotonic() - start < bound_s, f"{deployment} not back to {len(before)}"
        time.sleep(0.1)


def replica_pids(app: str, deployments: list[str], bound_s: float = 30.0) -> dict[str, int]:
    """Process ids of ``deployments``' replicas in ``app``, from their process titles.

    Ray sets a replica's title (``ServeReplica:<app>:<deployment>``) from inside the new
    process, a moment after Serve reports the application running, so this waits (bounded)
    until every deployment named has one.
    """
    marker = f"ServeReplica:{app}:"
    deadline = time.monotonic() + bound_s
    while True:
        pids = {}
        for proc in pathlib.Path("/proc").iterdir():
            try:
                raw = (proc / "cmdline").read_bytes() if proc.name.isdigit() else b""
            except OSError:
                continue
            cmdline = raw.replace(b"\0", b" ").decode(errors="replace")
            if marker in cmdline:
                deployment = cmdline.split(marker, 1)[1].split()[0]
                if deployment in deployments:
                    pids[f"{deployment}#{proc.name}"] = int(proc.name)
        missing = set(deployments) - {name.split("#")[0] for name in pids}
        if not missing:
            return pids
        assert time.monotonic() < deadline, f"no process titled for {missing}"
        time.sleep(0.2)


def rss_bytes(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
