"""Build the review scorer Bento, serve it on a local Ray, answer a request, stop.

    python examples/review_scorer/quickstart.py

The Bento lands in this machine's BentoML store (BENTOML_HOME, default ~/bentoml); Ray
runs in this process and stops at the end. To keep it serving instead, run
``serve run bento_ray:scorer`` from this folder after this script has built the Bento.
"""

from __future__ import annotations

import json
import os
import pathlib
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
REVIEWS = ["Great phone, love it", "Slow and broken"]


def post(url: str, body: object) -> str:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return f"{response.status} {response.read().decode().strip()}"


def main() -> None:
    # Token authentication, as Ray 2.52+ turns on for a new local Ray anyway; said
    # explicitly, Ray does not warn about choosing it.
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    import bentoml
    import ray
    from ray import serve

    bento = bentoml.bentos.build_bentofile(build_ctx=str(HERE))
    print(f"Built Bento {bento.tag}")

    import bento_ray  # examples/review_scorer/bento_ray.py, what `serve run` imports

    # A Ray of this process's own (never a cluster RAY_ADDRESS names), without the
    # dashboard it does not need; the replicas' logs stay in Ray's log files.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.run(bento_ray.scorer, name="review_scorer")
        url = "http://127.0.0.1:8000/score"
        print(f"POST /score {json.dumps(REVIEWS)} -> {post(url, {'reviews': REVIEWS})}")
    finally:
        # Ending the Ray this script started ends Serve's controller and replicas with it.
        # Not serve.shutdown() first: on Ray 2.60 it reports its controller's own exit as
        # "Task ServeController.graceful_shutdown failed", and serve.delete() would wait
        # out the replicas' graceful shutdown for nothing.
        ray.shutdown()
    print("Stopped Ray.")


if __name__ == "__main__":
    main()
