"""Cold starts: `serve.run` to the first 200, and the first request from zero replicas.

    python benchmarks/cold_start.py                # about 13 minutes on 2 cores
    python benchmarks/cold_start.py --rounds 1 --targets "iris: hand-written"  # a smoke run

Three measurements, each for bentoml-ray and for hand-written Ray Serve doing the same
work with the same deployments (the iris example, runner-based, in its default layout and
with the runner embedded; the review scorer, 1.2+, two services):

1. **Deploy**: ``serve.run`` of the application until its first 200, in one Ray.
2. **From zero replicas**: every deployment with ``autoscaling_config`` ``min_replicas: 0``
   (and ``initial_replicas: 0``); once Serve reports no replica running, the time of one
   request. A request that needs two deployments waits for both to start, one after
   the other, whoever wrote them. ``--rounds`` times each, scaling back to zero between;
   a round that answers other than 200 is recorded as failed, and the run goes on.
3. **Where a replica's start goes**, without Ray: a fresh Python process times each step a
   replica takes (importing Ray Serve, BentoML and bentoml-ray's replica modules, loading
   the Bento's service, loading its model, building the HTTP app); the hand-written replica
   imports Ray Serve and BentoML and loads the model. What Ray adds (a worker process, the
   replica's actor, its health check) is the same for both.

Results go to benchmarks/results/cold-start-*.json and .md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import RESULTS, build_bentos, free_port, wait_ok  # noqa: E402

#: Start the first replica as soon as a request waits, and scale back to zero soon after.
#: The look-back stays longer than the handles' metrics push (10 s by default): with a
#: shorter one, Serve took a starting replica for idle and stopped it, the request waiting.
FROM_ZERO = {
    "min_replicas": 0,
    "initial_replicas": 0,
    "max_replicas": 1,
    "upscale_delay_s": 0,
    "downscale_delay_s": 2,
    "downscale_to_zero_delay_s": 2,
    "look_back_period_s": 15,
}
IRIS = ("/classify", b"[[5.9, 3.0, 5.1, 1.8]]")
SCORER = ("/score", b'{"reviews": ["Great phone, love it!", "awful and SLOW"]}')

ZERO = {"autoscaling_config": FROM_ZERO}
EMBEDDED = {"iris_clf": {"embedded": True}}


@dataclasses.dataclass(frozen=True)
class Target:
    request: tuple[str, bytes]
    factory: str
    bento: str | None  # the Bento whose tag is the factory's argument
    kwargs: dict[str, Any]  # as deployed
    from_zero: dict[str, Any]  # every deployment autoscaled from zero replicas


TARGETS = {
    "iris: bentoml-ray": Target(
        IRIS, "bentoml_ray:deployment", "iris", {},
        {"service_deployment_config": ZERO, "runner_deployment_config": {"iris_clf": ZERO}},
    ),
    "iris: hand-written, 2 deployments": Target(IRIS, "handwritten:iris_two_hops", None, {}, ZERO),
    "iris: bentoml-ray, runner embedded": Target(
        IRIS, "bentoml_ray:deployment", "iris", {"runner_deployment_config": EMBEDDED},
        {"service_deployment_config": ZERO, "runner_deployment_config": EMBEDDED},
    ),
    "iris: hand-written": Target(IRIS, "handwritten:iris_single", None, {}, ZERO),
    "scorer: bentoml-ray": Target(
        SCORER, "bentoml_ray:deployment", "composed", {},
        {"service_deployment_config": ZERO, "runner_deployment_config": {"Preprocessor": ZERO}},
    ),
    "scorer: hand-written": Target(SCORER, "handwritten:scorer", None, {}, ZERO),
}  # fmt: skip

#: What each kind of replica does when it starts, as ``--phases`` times it.
PHASES = ("runner-based", "1.2+", "hand-written")


def phases(kind: str, tag: str) -> dict[str, float]:
    """Time the steps of one replica's start in this (fresh) process."""
    import warnings

    warnings.simplefilter("ignore")
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def step(name: str) -> None:
        nonlocal started
        now = time.perf_counter()
        timings[name] = now - started
        started = now

    from ray import serve  # noqa: F401

    step("import ray.serve")
    import bentoml

    step("import bentoml")
    if kind == "hand-written":
        bentoml.sklearn.load_model("iris_clf:latest")
        step("load the model")
        return timings
    from bentoml_ray._bento.source import _source_of_bento

    if kind == "runner-based":
        from bentoml_ray._runners import api_server, runner_deployment  # noqa: F401
        from bentoml_ray._runners.service import load_service
    else:
        from bentoml_ray._services import deployments  # noqa: F401
        from bentoml_ray._services.app_factory import RayServiceAppFactory
        from bentoml_ray._services.loading import load_service as load_1_2
    step("import bentoml-ray's replica modules")
    bento = bentoml.get(tag)
    source = _source_of_bento(bento, install_requirements=False)
    if kind == "runner-based":
        service = load_service(source)
        step("load the Bento's service")
        for runner in service.runners:
            runner.init_local(quiet=True)
        step("load the model")
        api_server.runner_ingress(service, "/")
    else:
        service = load_1_2(source, bento.info.entry_service, {})
        step("load the Bento's service")
        RayServiceAppFactory(service, is_main=True, batching={})()
    step("build the HTTP app")
    return timings


def profile(env: dict[str, str], tags: dict[str, str], rounds: int) -> dict[str, Any]:
    """Each kind's phases in fresh processes, ``rounds`` times; medians."""
    found: dict[str, Any] = {}
    for kind in PHASES:
        tag = tags["composed"] if kind == "1.2+" else tags["iris"]
        runs = [
            json.loads(
                subprocess.run(
                    [sys.executable, __file__, "--phases", kind, tag], env=env,
                    capture_output=True, text=True, check=True,
                ).stdout.strip().splitlines()[-1]
            )
            for _ in range(rounds)
        ]  # fmt: skip
        found[kind] = {step: statistics.median(r[step] for r in runs) for step in runs[0]}
        print(f"[phases] {kind}: {found[kind]}", flush=True)
    return found


def running_replicas(app: str) -> int:
    """Replicas running in ``app``'s deployments, its hub (always one) left out."""
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None:
        return -1
    return sum(
        dict(deployment.replica_states).get("RUNNING", 0)
        for name, deployment in status.deployments.items()
        if not name.endswith(".hub")
    )


def first_request_s(url: str, body: bytes) -> float:
    started = time.monotonic()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}")
    return time.monotonic() - started


def in_ray(tags: dict[str, str], targets: list[str], rounds: int, cpus: int) -> dict[str, Any]:
    import ray
    from ray import serve
    from run import slug

    port = free_port()
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    import handwritten  # noqa: F401  (its deployments pickle by reference to it)
    from ray_host import build

    found: dict[str, Any] = {}
    try:
        for label in targets:
            target = TARGETS[label]
            path, body = target.request
            args = [tags[target.bento]] if target.bento else []
            name = slug(label)
            base = f"http://127.0.0.1:{port}/{name}"
            # Deploy: serve.run to the first 200, as a user's first deploy.
            started = time.monotonic()
            serve.run(build(target.factory, args, target.kwargs), name=name,
                      route_prefix=f"/{name}")  # fmt: skip
            wait_ok(base + path, body)
            deploy_s = time.monotonic() - started
            serve.delete(name)
            # From zero replicas.
            zero_name = f"{name}-from-zero"
            serve.run(build(target.factory, args, target.from_zero), name=zero_name,
                      route_prefix=f"/{zero_name}")  # fmt: skip
            firsts: list[float] = []
            failures: list[str] = []
            for _ in range(rounds):
                deadline = time.monotonic() + 180
                while running_replicas(zero_name) != 0:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{zero_name} did not scale to zero replicas")
                    time.sleep(0.5)
                time.sleep(1)  # the proxy sees the change too
                url = f"http://127.0.0.1:{port}/{zero_name}{path}"
                started = time.monotonic()
                try:
                    firsts.append(first_request_s(url, body))
                except OSError as exc:  # an answer other than 200 is a finding, not a crash
                    failures.append(f"after {time.monotonic() - started:.1f} s: {exc}")
            serve.delete(zero_name)
            found[label] = {"deploy_s": deploy_s, "from_zero_s": firsts, "failed": failures}
            print(f"[ray] {label}: {found[label]}", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    return found


def table(results: dict[str, Any]) -> str:
    lines = [
        "| target | serve.run to first 200, s | first request from zero replicas, s (median) "
        "| rounds |",
        "| --- | --- | --- | --- |",
    ]
    for label, row in results["ray"].items():
        firsts = row["from_zero_s"]
        median = f"{statistics.median(firsts):.1f}" if firsts else "-"
        rounds = [f"{s:.1f}" for s in firsts] + [f"failed {f}" for f in row["failed"]]
        lines.append(f"| {label} | {row['deploy_s']:.1f} | {median} | {', '.join(rounds)} |")
    lines += ["", "| replica | step | s (median) |", "| --- | --- | --- |"]
    for kind, steps in results["phases"].items():
        for step_name, seconds in steps.items():
            lines.append(f"| {kind} | {step_name} | {seconds:.2f} |")
        lines.append(f"| {kind} | **total** | **{sum(steps.values()):.2f}** |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> pathlib.Path | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--targets", type=lambda s: s.split(";"), default=list(TARGETS),
                        help=f"separated by ';', of: {'; '.join(TARGETS)}")  # fmt: skip
    parser.add_argument("--ray-cpus", type=int, default=8)
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS)
    parser.add_argument("--phases", nargs=2, metavar=("KIND", "TAG"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phases:
        print(json.dumps(phases(*args.phases)))
        return None
    if unknown := set(args.targets) - set(TARGETS):
        parser.error(f"unknown target(s) {sorted(unknown)}; targets: {'; '.join(TARGETS)}")

    work = pathlib.Path(tempfile.mkdtemp(prefix="bentoml-ray-cold-"))
    env = {**os.environ, "BENTOML_HOME": str(work / "home"), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    os.environ.update(BENTOML_HOME=env["BENTOML_HOME"], RAY_USAGE_STATS_ENABLED="0")
    print("building the Bentos ...", flush=True)
    tags = build_bentos(env, {"iris", "composed"})
    results = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "phases": profile(env, tags, args.rounds),
        "ray": in_ray(tags, args.targets, args.rounds, args.ray_cpus),
    }
    text = table(results)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"cold-start-{time.strftime('%Y%m%d-%H%M%S')}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2))
    stem.with_suffix(".md").write_text(text + "\n")
    print("\n" + text + f"\n\nresults: {stem}.json, .md")
    return stem


if __name__ == "__main__":
    main()
