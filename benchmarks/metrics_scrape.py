"""What a read of ``/metrics`` costs as the application grows: 2 replicas, then 10.

    python benchmarks/metrics_scrape.py            # about 2 minutes on 2 cores

The composed 1.2+ example (examples/review_scorer: a root and a dependency) runs on a
local Ray with its replicas split evenly between the two services, first 1 + 1, then 5 + 5
(a tenth of a CPU each). After a few scoring requests, ``/metrics`` is read 30 times one
after another through Ray's proxy, over one kept-alive connection; each read is a round
at the application's hub, in which every replica reports its registry and the hub merges
them. Printed: the median and 90th
percentile of a read, the size of the answer, and, for scale, a scoring request's median.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import httpx


def _timed(call: object, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        call()  # type: ignore[operator]
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    os.environ.setdefault("BENTOML_HOME", tempfile.mkdtemp(prefix="bentoml-ray-scrape-"))
    from run import build_bentos

    tag = build_bentos(dict(os.environ), ["composed"])["composed"]
    import ray
    from ray import serve

    import bentoml_ray

    ray.init(address="local", num_cpus=16, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": 8123})
    url = "http://127.0.0.1:8123"
    client = httpx.Client(timeout=30)  # kept alive, as Prometheus keeps its connection
    body = {"reviews": ["great phone", "awful and slow"]}
    try:
        for per_service in (1, 5):
            small = {"num_replicas": per_service, "ray_actor_options": {"num_cpus": 0.1}}
            app = bentoml_ray.deployment(tag, small, {"Preprocessor": small})
            serve.run(app, name="scrape", route_prefix="/")
            for _ in range(20):
                client.post(f"{url}/score", json=body).raise_for_status()
            time.sleep(1)  # every replica's first poll is in
            size = len(client.get(f"{url}/metrics").content)
            reads = _timed(lambda: client.get(f"{url}/metrics").raise_for_status(), 30)
            scores = _timed(lambda: client.post(f"{url}/score", json=body).raise_for_status(), 30)
            median, p90 = statistics.median(reads), statistics.quantiles(reads, n=10)[-1]
            print(
                f"{2 * per_service:2d} replicas: a /metrics read {median:6.1f} ms median, "
                f"{p90:6.1f} ms p90, {size} bytes; "
                f"a /score request {statistics.median(scores):5.1f} ms median"
            )
            serve.delete("scrape")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
