"""Version changes under load: an upgrade, a broken version, and a rollback.

    python benchmarks/rollout.py                      # both Ray modes, about 4 minutes
    python benchmarks/rollout.py --modes default      # one mode

A composed 1.2+ Bento (``tests/fixtures/versioned_pair``: a root ``Front`` that calls
``Back``; every answer names the version of both) is served with ``deployment()``'s
defaults, one replica per deployment, while 6 clients send requests one after another.
Three versions are built: 1, 2, and "broken" (its ``Back`` raises while loading). Then,
each by ``serve.run`` of the same application:

1. **upgrade**: 1 to 2;
2. **broken**: 2 to broken (``serve.run`` must raise; version 2 must keep answering, whole);
3. **rollback**: to 1.

For each step, from the deploy call until the old version's last answer (and 5 s after a
failed deploy): requests answered, failed (a status other than 200, or no answer), mixed (an
answer whose root and dependency versions differ), the longest request, and how long the
deploy call took. Results go to benchmarks/results/rollout-*.json (``--out`` another folder).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

HERE = pathlib.Path(__file__).resolve().parent
SOURCE = HERE.parent / "tests" / "fixtures" / "versioned_pair"
BIN = pathlib.Path(sys.executable).parent
MODES = {
    "default": {},
    "throughput": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"},
}
CLIENTS = 6
#: After a step settles, how long the load goes on before the next one.
SETTLE_S = 3.0


@dataclass
class Answer:
    start: float
    end: float
    status: int  # 0: no answer
    front: str = ""
    back: str = ""


@dataclass
class Load:
    url: str
    answers: list[Answer] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self.stop.is_set():
                start = time.monotonic()
                try:
                    response = client.post(self.url, json={})
                    body = response.json() if response.status_code == 200 else {}
                    answer = Answer(start, time.monotonic(), response.status_code,
                                    body.get("front", ""), body.get("back", ""))  # fmt: skip
                except (httpx.HTTPError, ValueError):
                    answer = Answer(start, time.monotonic(), 0)
                self.answers.append(answer)

    def since(self, start: float, end: float) -> list[Answer]:
        return [a for a in self.answers if a.end >= start and a.start <= end]


def build(home: pathlib.Path, version: str) -> str:
    folder = pathlib.Path(tempfile.mkdtemp()) / "versioned_pair"
    shutil.copytree(SOURCE, folder)
    service = folder / "service.py"
    service.write_text(service.read_text().replace('VERSION = "1"', f'VERSION = "{version}"'))
    out = subprocess.run(
        [str(BIN / "bentoml"), "build", "--output", "tag"], cwd=folder, check=True,
        env={**os.environ, "BENTOML_HOME": str(home)}, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return out.strip().splitlines()[-1].removeprefix("__tag__:")


def summary(answers: list[Answer], took: float, raised: str, start: float) -> dict[str, Any]:
    versions: dict[str, int] = {}
    for a in answers:
        if a.status == 200:
            versions[f"{a.front}/{a.back}"] = versions.get(f"{a.front}/{a.back}", 0) + 1
    return {
        "answered": len(answers),
        "failed": sum(a.status != 200 for a in answers),
        "failed_by_status": {  # 0: no answer at all
            str(status): sum(a.status == status for a in answers)
            for status in sorted({a.status for a in answers} - {200})
        },
        "mixed": sum(a.status == 200 and a.front != a.back for a in answers),
        "longest_s": round(max((a.end - a.start for a in answers), default=0.0), 2),
        "deploy_call_s": round(took, 1),
        "deploy_raised": raised,
        "answers_by_version": versions,
        "slowest": [  # when each began (s after the deploy call), took, and its versions
            (round(a.start - start, 1), round(a.end - a.start, 2), f"{a.front}/{a.back}", a.status)
            for a in sorted(answers, key=lambda a: a.start - a.end)[:5]
        ],
    }


def run_mode(mode: str, tags: dict[str, str]) -> dict[str, Any]:
    """One Ray in this mode (a process of its own: the mode is read when Ray imports)."""
    code = f"""
import json, sys
sys.path.insert(0, {str(HERE)!r})
import rollout
print(json.dumps(rollout.steps({tags!r})))
"""
    env = {**os.environ, **MODES[mode]}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(done.stdout[-3000:] + done.stderr[-5000:])
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def steps(tags: dict[str, str]) -> dict[str, Any]:
    import ray
    from ray import serve
    from run import free_port

    import bentoml_ray

    port = free_port()
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    results: dict[str, Any] = {}
    load = Load(f"http://127.0.0.1:{port}/versions")

    def deploy(version: str) -> tuple[float, str]:
        start = time.monotonic()
        try:
            serve.run(bentoml_ray.deployment(tags[version]), name="pair", route_prefix="/")
            return start, ""
        except Exception as exc:  # the broken version: serve.run raises
            return start, f"{type(exc).__name__}: {str(exc)[:300]}"

    def settle(old: str, start: float, raised: str) -> float:
        """When the old version gave its last answer (or 5 s after a failed deploy)."""
        time.sleep(SETTLE_S if not raised else 5.0)
        if raised:
            return time.monotonic()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            recent = load.since(time.monotonic() - 1.0, time.monotonic())
            if recent and all(a.front != old and a.back != old for a in recent):
                break
            time.sleep(0.5)
        return time.monotonic()

    try:
        deploy("1")
        threads = [threading.Thread(target=load.run, daemon=True) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        time.sleep(SETTLE_S)
        for name, old, new in (("upgrade", "1", "2"), ("broken", "2", "broken"),
                               ("rollback", "2", "1")):  # fmt: skip
            start, raised = deploy(new)
            took = time.monotonic() - start
            end = settle(old, start, raised)
            results[name] = summary(load.since(start, end), took, raised, start)
        load.stop.set()
        for thread in threads:
            thread.join()
    finally:
        serve.shutdown()
        ray.shutdown()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", default="default,throughput")
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "results")
    args = parser.parse_args()
    home = pathlib.Path(tempfile.mkdtemp(prefix="rollout-home-"))
    os.environ["BENTOML_HOME"] = str(home)
    tags = {version: build(home, version) for version in ("1", "2", "broken")}
    results = {mode: run_mode(mode, tags) for mode in args.modes.split(",")}
    for mode, steps_of in results.items():
        for name, figures in steps_of.items():
            print(f"[{mode}] {name}: {json.dumps(figures)}")
    out = args.out / f"rollout-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
