"""What clients see when an ingress replica is killed under load, per Ray proxy setup.

    python benchmarks/ingress_kill.py [default|throughput|throughput-retry] [--kills N]

Builds tests/fixtures/fault_probe (a root service whose dependency takes 1 s a call) into
a temporary BentoML store, serves it with two root replicas on a local Ray in the chosen
mode, keeps 16 connections busy and ``ray.kill``s one root replica at a time, printing the
failed requests per kill. Modes:

- ``default``: Ray's Python proxy. It routes new requests around the dead replica but
  does not retry the ones that were running in it: those come back as 500.
- ``throughput``: Ray's high-throughput mode (HAProxy straight into the replicas), with
  Ray's HAProxy retry policy (``retry-on conn-failure``: only requests never sent).
- ``throughput-retry``: the same with ``RAY_SERVE_HAPROXY_RETRY_ON="conn-failure
  empty-response response-timeout"``, so HAProxy resends a request whose replica closed
  the connection without answering. Only for idempotent APIs; HAProxy's own option. (An
  explicit ``RAY_SERVE_HAPROXY_RETRY_ON`` in the environment wins.)

Needs HAProxy for the throughput modes (``pip install 'bentoml-ray[throughput]'``); its
stats and metrics ports (Ray's defaults: 8404, 9101) are moved to free ports here.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODES = {
    "default": {},
    "throughput": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"},
    "throughput-retry": {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response response-timeout",
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=sorted(MODES))
    parser.add_argument("--kills", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from _support import free_port

    for name, value in MODES[args.mode].items():  # Ray reads these at import
        os.environ.setdefault(name, value)
    os.environ["RAY_SERVE_HAPROXY_STATS_PORT"] = str(free_port())
    os.environ["RAY_SERVE_HAPROXY_METRICS_PORT"] = str(free_port())
    home = tempfile.mkdtemp(prefix="bentoml-ray-ingress-kill-")
    os.environ["BENTOML_HOME"] = home
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    import ray
    from _load import Load, kill_replica, replica_actor_names, wait_replaced
    from _support import FIXTURES, build_bento
    from ray import serve

    import bentoml_ray

    tag = build_bento(FIXTURES / "fault_probe")
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = bentoml_ray.deployment(tag, {"num_replicas": 2}, {"Worker": {"num_replicas": 2}})
    serve.run(app, name="ingress-kill", route_prefix="/")
    try:
        url = f"http://127.0.0.1:{port}/work"
        check = lambda response: response.json()["x"] == 7  # noqa: E731
        with Load(url, {"x": 7}, 16, check=check) as load:
            load.wait_for(40)
            for kill in range(args.kills):
                before = len(load.failures)
                victims = replica_actor_names("ingress-kill", "Front")
                kill_replica(victims[0])
                replaced_s = wait_replaced("ingress-kill", "Front", victims, 180)
                load.wait_for(len(load.outcomes) + 40)
                print(
                    f"{args.mode}: kill {kill + 1}: {len(load.failures) - before} failed "
                    f"requests; replacement running after {replaced_s:.1f} s",
                    flush=True,
                )
                time.sleep(1)
        print(f"{args.mode}: {load.summary()}")
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
