"""One Ray with Serve, hosting the benchmark's applications, in its own process.

    python ray_host.py SPEC.json

Run by ``run.py`` with the mode's environment already set (Ray's high-throughput mode is
chosen by environment variables read at import). Deploys each application of the spec in
turn, timing ``serve.run`` to its first 200 (or, with ``"at_once": true`` in the spec, as
``run.py --one-ray`` asks, all of them with one ``serve.run_many``, each timed from there
to its first 200), writes the timings next to the spec (``SPEC.json.ready``), then serves
until SIGTERM.
"""

from __future__ import annotations

import importlib
import json
import pathlib
import signal
import sys
import time
import warnings
from typing import Any

warnings.simplefilter("ignore")


def build(factory: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    module, _, attribute = factory.partition(":")
    return getattr(importlib.import_module(module), attribute)(*args, **kwargs)


def main() -> None:
    spec_path = pathlib.Path(sys.argv[1])
    spec = json.loads(spec_path.read_text())
    sys.path.insert(0, str(pathlib.Path(__file__).parent))

    import ray
    from ray import serve
    from run import wait_ok

    ray.init(
        address="local", num_cpus=spec["num_cpus"], include_dashboard=False, log_to_driver=False
    )
    serve.start(http_options={"host": "127.0.0.1", "port": spec["port"]})
    # The runner ends this node's leftovers (high-throughput mode's HAProxy) by node id.
    pathlib.Path(f"{spec_path}.node").write_text(ray.get_runtime_context().get_node_id())
    cold_start: dict[str, float] = {}

    def application(app: dict[str, Any]) -> Any:
        return build(app["factory"], app["args"], app["kwargs"])

    def answered(app: dict[str, Any], started: float) -> None:
        # The probe's body travels in the JSON spec as latin-1 text (an image's bytes too).
        wait_ok(app["probe_url"], app["probe_body"].encode("latin-1"), app["content_type"])
        cold_start[app["name"]] = time.monotonic() - started

    if spec.get("at_once"):
        # The replicas of every application start side by side: a smoke run's many
        # applications are up in a fraction of the time that one after another takes.
        started = time.monotonic()
        targets = [
            serve.RunTarget(application(app), name=app["name"], route_prefix=app["route_prefix"])
            for app in spec["apps"]
        ]
        serve.run_many(targets, wait_for_applications_running=False)
        for app in spec["apps"]:
            answered(app, started)
    else:
        for app in spec["apps"]:
            started = time.monotonic()
            serve.run(application(app), name=app["name"], route_prefix=app["route_prefix"])
            answered(app, started)

    pathlib.Path(f"{spec_path}.ready").write_text(json.dumps(cold_start))
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    while not stopping:
        time.sleep(0.2)
    # No ``serve.shutdown()``: the measuring is over, and in high-throughput mode Serve's
    # graceful shutdown (replicas draining behind HAProxy) ran into its 30 s timeout every
    # time. Ending Ray ends every replica; ``run.py`` then ends HAProxy.
    ray.shutdown()


if __name__ == "__main__":
    main()
