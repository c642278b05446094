"""Offline inference, side by side in one run: ``map_api`` against hand-written Ray Data and HTTP.

    python benchmarks/offline.py                         # 1 million rows each: ~6 min on 2 cores
    python benchmarks/offline.py --rows 2000 --rounds 1 --http-seconds 1   # a smoke run

For each workload (the iris example, runner-based; the composed review scorer, 1.2+) the
same materialised Dataset is scored by:

- ``bentoml_ray.map_api`` with the Bento;
- a hand-written ``map_batches`` class doing the same work: the iris model loaded from the
  BentoML store and called on each batch's array; the review scorer's normalising and
  word weights written out;
- a loop of HTTP requests, one row each, to the same Bento served by bentoml-ray, from wrk
  at 32 connections for ``--http-seconds`` (rows/s, so the full million is not needed).

The two Ray Data targets alternate over the rounds with the same batch size and actors;
rows/s is the median, actor start-up included. Each actor's largest resident memory is
sampled while it runs. Results go to benchmarks/results/offline-*.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import psutil

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))


class HandWrittenIris:
    """What a Ray Data user writes for the iris model: load it once, predict each batch."""

    def __init__(self, model_tag: str) -> None:
        import bentoml

        self.model = bentoml.sklearn.load_model(model_tag)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {**batch, "output": self.model.predict(batch["input_series"])}


class HandWrittenScorer:
    """The review scorer's work written out: normalise each text, sum its words' weights."""

    def __init__(self) -> None:
        from handwritten import WEIGHTS

        self.weights = WEIGHTS

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        normalized = [" ".join(re.findall(r"[a-z]+", str(t).lower())) for t in batch["reviews"]]
        scores = [sum(self.weights.get(word, 0.0) for word in text.split()) for text in normalized]
        return {**batch, "output": np.asarray(scores)}


class ActorMemory:
    """The largest resident memory of each Ray Data actor process seen while a job runs."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.peak: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> ActorMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            for process in psutil.process_iter(["cmdline"]):
                if any(self.marker in part for part in process.info["cmdline"] or []):
                    try:
                        rss = process.memory_info().rss
                    except psutil.Error:
                        continue
                    self.peak[process.pid] = max(self.peak.get(process.pid, 0), rss)

    def mib(self) -> float:
        return round(max(self.peak.values(), default=0) / 2**20, 1)


def timed_job(score: Callable[[], Any], rows: int, marker: str) -> dict[str, float]:
    with ActorMemory(marker) as memory:
        start = time.perf_counter()
        done = score().materialize()
        seconds = time.perf_counter() - start
    assert done.count() == rows
    return {"rows_per_s": rows / seconds, "seconds": seconds, "actor_mib": memory.mib()}


def http_rows_per_s(tag: str, path: str, body: str, seconds: int, port: int) -> float:
    """Rows/s of one-row requests to the Bento served by bentoml-ray (Serve on ``port``)."""
    from ray import serve
    from run import run_wrk, wait_ok

    import bentoml_ray

    serve.run(bentoml_ray.deployment(tag), name="http-loop", route_prefix="/")
    url = f"http://127.0.0.1:{port}{path}"
    wait_ok(url, body.encode())
    run_wrk(url, body.encode(), "application/json", 32, 2)  # warm-up
    measured = run_wrk(url, body.encode(), "application/json", 32, seconds)
    serve.delete("http-loop")
    assert measured["errors"] == 0, measured
    return float(measured["rps"])  # one row per request


def main(argv: list[str] | None = None) -> pathlib.Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--http-seconds", type=int, default=10)
    parser.add_argument("--workloads", default="iris,composed")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS)
    args = parser.parse_args(argv)
    names = args.workloads.split(",")

    work = tempfile.mkdtemp(prefix="bentoml-ray-offline-")
    os.environ["BENTOML_HOME"] = os.path.join(work, "home")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from run import build_bentos, free_port

    print("building the Bentos ...", flush=True)
    tags = build_bentos(dict(os.environ), names)
    import bentoml
    import ray
    import ray.data

    import bentoml_ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    pool = ray.data.ActorPoolStrategy(size=args.actors)
    common = {"batch_size": args.batch_size, "compute": pool, "num_cpus": 1}
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": []}

    rng = np.random.default_rng(0)
    low, high = np.array([4.3, 2.0, 1.0, 0.1]), np.array([7.9, 4.4, 6.9, 2.5])
    reviews = np.array(["great fast phone", "awful and slow", "fine I guess", "Love it!!"])
    inputs = {
        "iris": lambda: ray.data.from_numpy(rng.uniform(low, high, (args.rows, 4)).round(1))
        .rename_columns({"data": "input_series"}),
        "composed": lambda: ray.data.from_items(
            [{"reviews": str(reviews[i % len(reviews)])} for i in range(args.rows)]
        ),
    }  # fmt: skip
    model_tag = ""
    if "iris" in names:
        model_tag = str(bentoml.get(tags["iris"]).info.models[0].tag)
    jobs: dict[str, dict[str, Callable[[Any], Any]]] = {
        "iris": {
            "bentoml-ray map_api": lambda ds: bentoml_ray.map_api(
                ds, tags["iris"], "classify", **common
            ),
            "hand-written map_batches": lambda ds: ds.map_batches(
                HandWrittenIris, fn_constructor_args=(model_tag,), batch_format="numpy", **common
            ),
        },
        "composed": {
            "bentoml-ray map_api": lambda ds: bentoml_ray.map_api(
                ds, tags["composed"], "score", **common
            ),
            "hand-written map_batches": lambda ds: ds.map_batches(
                HandWrittenScorer, batch_format="numpy", **common
            ),
        },
    }
    markers = {"bentoml-ray map_api": "BentoApiActor", "hand-written map_batches": "HandWritten"}
    http = {
        "iris": ("/classify", "[[5.9, 3.0, 5.1, 1.8]]"),
        "composed": ("/score", '{"reviews": ["great fast phone"]}'),
    }
    try:
        for name in names:
            dataset = inputs[name]().materialize()
            runs: dict[str, list[dict[str, float]]] = {label: [] for label in jobs[name]}
            for round_ in range(args.rounds):
                for label, job in jobs[name].items():
                    measured = timed_job(lambda: job(dataset), args.rows, markers[label])  # noqa: B023
                    runs[label].append(measured)
                    print(f"[{name}] round {round_ + 1} {label}: {measured}", flush=True)
            for label, measured in runs.items():
                results["rows"].append({
                    "workload": name, "target": label,
                    "rows_per_s": statistics.median(m["rows_per_s"] for m in measured),
                    "actor_mib": max(m["actor_mib"] for m in measured),
                })  # fmt: skip
            path, body = http[name]
            rps = http_rows_per_s(tags[name], path, body, args.http_seconds, port)
            print(f"[{name}] HTTP loop at 32 connections: {rps:.0f} rows/s", flush=True)
            results["rows"].append({"workload": name, "target": "HTTP loop, 32 connections",
                                    "rows_per_s": rps, "actor_mib": None})  # fmt: skip
    finally:
        ray.shutdown()
    return write(results, args.out)


def write(results: dict[str, Any], out: pathlib.Path) -> pathlib.Path:
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out / f"offline-{stamp}.json"
    path.write_text(json.dumps(results, indent=2))
    lines = ["| workload | target | rows/s | map_api / this | largest actor RSS (MiB) |",
             "|---|---|---:|---:|---:|"]  # fmt: skip
    for row in results["rows"]:
        ours = next(
            r["rows_per_s"] for r in results["rows"]
            if r["workload"] == row["workload"] and r["target"] == "bentoml-ray map_api"
        )  # fmt: skip
        ratio = f"{ours / row['rows_per_s']:.2f}" if row["rows_per_s"] else "-"
        lines.append(
            f"| {row['workload']} | {row['target']} | {row['rows_per_s']:,.0f} | "
            f"{ratio} | {row['actor_mib'] or '-'} |"
        )
    table = "\n".join(lines)
    (out / f"offline-{stamp}.md").write_text(table + "\n")
    print(table)
    return path


if __name__ == "__main__":
    main()
