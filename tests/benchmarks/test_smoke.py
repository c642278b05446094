"""The benchmark harnesses run end to end (tiny runs), so that they do not rot.

Not part of the main suite (pyproject's ``testpaths`` leave this folder out): a CI step of
its own, ``.venv/bin/python -m pytest tests/benchmarks``. Speed itself is never asserted
here: figures come from ``benchmarks/run.py`` runs, where targets are compared side by side
in one run.
"""

from __future__ import annotations

import ast
import json
import pathlib
import shutil
import subprocess
import sys

import pytest
from _support import ROOT

BENCHMARKS = ROOT / "benchmarks"


def _workloads() -> tuple[str, ...]:
    """Every workload of ``run.py`` (its ``WORKLOADS``, read without importing it)."""
    for node in ast.parse((BENCHMARKS / "run.py").read_text()).body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets) == "WORKLOADS":
            return tuple(ast.literal_eval(node.value))
    raise AssertionError("run.py has no WORKLOADS")


WORKLOADS = _workloads()


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
@pytest.mark.ray  # a process of its own starts Ray
def test_benchmark_harness_smoke_run(tmp_path: pathlib.Path) -> None:
    """Every workload, in high-throughput mode, all in one Ray (``--one-ray``), each target
    warmed by one request only (``--warm-up 0``).

    The harness runs both modes through the same code, so one is enough here; the
    high-throughput one also proves that sync dependency calls work where Ray runs its
    router on the replica's own loop, where DeploymentResponse.result() cannot, and that
    the image workloads' pixels pass the gRPC message limit between deployments. HAProxy
    comes with the test extra: if its ports are taken, ``run.py`` refuses, and this fails.
    """
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "run.py"), "--one-ray", "--modes", "throughput",
         "--duration", "1", "--rounds", "1", "--connections", "1", "--warm-up", "0",
         "--workloads", ",".join(WORKLOADS), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(next(tmp_path.glob("bench-*.json")).read_text())
    rows = {(row["workload"], row["target"]) for row in results["median"]}
    expected = {
        ("iris", "bentoml serve"), ("iris", "bentoml-ray"), ("iris", "hand-written"),
        ("iris", "bentoml-ray, runner embedded"), ("iris", "hand-written, 2 deployments"),
        ("composed", "bentoml serve"), ("composed", "bentoml-ray"), ("composed", "hand-written"),
        ("batching", "batching on"), ("batching", "batching off"),
        ("batching", "hand-written, serve.batch"),
        ("image", "bentoml-ray, sync"), ("image-large", "bentoml-ray, runner-based"),
        ("streaming", "bentoml-ray, relayed"), ("streaming-5ms", "hand-written, root"),
        ("batching-runner", "runner embedded, batching on"),
    }  # fmt: skip
    assert expected <= rows, rows
    assert {workload for workload, _ in rows} == set(WORKLOADS), rows
    assert {row["mode"] for row in results["median"]} == {"throughput"}, results["median"]
    assert all(row["rps"] > 0 for row in results["median"]), results["median"]
    # `bentoml serve` answers errors of its own under load (its async image API, say).
    on_ray = [row for row in results["median"] if not row["target"].startswith("bentoml serve")]
    assert all(row["errors"] == 0 for row in on_ray), on_ray
    assert results["ratios"] and results["cold_start_s"] and results["memory_mib"]
    table = next(tmp_path.glob("bench-*.md")).read_text()
    assert table.startswith("| mode |") and "tokens/s per stream" in table


@pytest.mark.ray  # a process of its own starts Ray
def test_cold_start_benchmark_smoke_run(tmp_path: pathlib.Path) -> None:
    """``benchmarks/cold_start.py`` on one target, one round: deploy, from zero, phases."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "cold_start.py"), "--rounds", "1",
         "--targets", "iris: bentoml-ray, runner embedded", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(next(tmp_path.glob("cold-start-*.json")).read_text())
    row = results["ray"]["iris: bentoml-ray, runner embedded"]
    assert row["deploy_s"] > 0 and len(row["from_zero_s"]) == 1
    assert set(results["phases"]) == {"runner-based", "1.2+", "hand-written"}


@pytest.mark.ray  # a process of its own starts Ray
def test_rollout_benchmark_in_high_throughput_mode(tmp_path: pathlib.Path) -> None:
    """``benchmarks/rollout.py`` in high-throughput mode, which the suite's Ray does not run
    (``tests/integration/test_redeploy.py`` is the default mode's): through an upgrade, a
    broken version and a rollback no answer mixes versions, the broken deploy raises naming
    ``Back`` while version 2 answers, and a request that fails at all is a 503 (a replaced
    version's, ``_replica.versions``), which a client may send again."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "rollout.py"), "--modes", "throughput",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    steps = json.loads(next(tmp_path.glob("rollout-*.json")).read_text())["throughput"]
    assert set(steps) == {"upgrade", "broken", "rollback"}, steps
    for name, step in steps.items():
        assert step["mixed"] == 0 and set(step["failed_by_status"]) <= {"503"}, (name, step)
        assert step["answered"] > step["failed"], (name, step)
    assert "'Back'" in steps["broken"]["deploy_raised"], steps["broken"]
    assert set(steps["broken"]["answers_by_version"]) == {"2/2"}, steps["broken"]
    assert "1/1" in steps["rollback"]["answers_by_version"], steps["rollback"]


#: One process per Bento (each loads its own ``service`` module), not one per target; the
#: own-layer target has its own, as it changes BentoML for the rest of its process.
INSTRUCTION_TARGETS = (
    "bentoml-ray routed,hand-written",
    "bentoml-ray own layer",
    "bentoml-ray 1.2+,hand-written scorer",
)


def test_instruction_count_targets_serve(iris_bento: str, review_scorer_bento: str) -> None:
    """What ``benchmarks/instructions.py`` runs under valgrind, run here without it.

    (``bentoml-ray`` is the same app as ``bentoml-ray routed``, with other requests.) The
    three processes run side by side: each spends most of its time importing.
    """
    children = {
        targets: subprocess.Popen(
            [
                sys.executable,
                str(BENCHMARKS / "instructions.py"),
                "--child",
                targets,
                "--requests",
                "3",
                "--no-count",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=BENCHMARKS,
        )
        for targets in INSTRUCTION_TARGETS
    }
    for targets, child in children.items():
        stdout, stderr = child.communicate(timeout=240)
        assert child.returncode == 0, (targets, stdout[-3000:] + stderr[-3000:])


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
@pytest.mark.ray  # a process of its own starts Ray
def test_offline_benchmark_smoke_run(tmp_path: pathlib.Path) -> None:
    """``benchmarks/offline.py`` end to end on a few rows: every target scores every row."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "offline.py"), "--rows", "2000",
         "--rounds", "1", "--http-seconds", "3", "--workloads", "composed",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=480,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(next(tmp_path.glob("offline-*.json")).read_text())
    targets = {row["target"]: row for row in results["rows"]}
    assert set(targets) == {
        "bentoml-ray map_api", "hand-written map_batches", "HTTP loop, 32 connections",
    }  # fmt: skip
    assert all(row["rows_per_s"] > 0 for row in targets.values()), targets
