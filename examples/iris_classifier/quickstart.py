"""Train the model, build the Bento, serve it on a local Ray, and answer one request.

    python examples/iris_classifier/quickstart.py

Everything lands in this machine's BentoML store (BENTOML_HOME, default ~/bentoml); Ray
runs in this process and stops at the end. To keep it serving instead, run
``serve run bento_ray:classifier`` from this folder after this script has built the Bento.
"""

from __future__ import annotations

import json
import os
import pathlib
import urllib.request
import warnings

HERE = pathlib.Path(__file__).resolve().parent


def main() -> None:
    warnings.simplefilter("ignore", DeprecationWarning)  # BentoML's notes on legacy services
    import bentoml
    import ray
    from ray import serve

    os.chdir(HERE)
    from train import train

    print(f"Saved model {train().tag}")
    bento = bentoml.bentos.build_bentofile(build_ctx=str(HERE))
    print(f"Built Bento {bento.tag}")

    import bento_ray  # the contract's example 1, as written

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.run(bento_ray.classifier)
        request = urllib.request.Request(
            "http://127.0.0.1:8000/classify",
            data=json.dumps([[5.9, 3.0, 5.1, 1.8]]).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = response.read().decode()
            print(f"POST /classify [[5.9, 3.0, 5.1, 1.8]] -> {response.status} {answer}")
    finally:
        # Ending the Ray this script started ends Serve with it; serve.shutdown() first
        # would have Ray 2.60 report its controller's exit as a failed task.
        ray.shutdown()


if __name__ == "__main__":
    main()
