"""Offline inference on a real Ray: ``map_api`` over Ray Datasets, ``bentoml-ray batch`` on files.

The session's local Ray runs Ray Data's actors; the answers are compared with the same API
called one row at a time in this process. ``bentoml-ray batch`` runs as a user runs it,
once on the two-node ``ray start`` cluster and once on a local Ray it starts itself; the
last test pins actors to the cluster's node whose BentoML store (and, at the start,
bentoml-ray cache) is empty.
"""

from __future__ import annotations

import asyncio
import functools
import json
import pathlib
import subprocess
from typing import Any

import bentoml
import httpx
import numpy as np
import pytest
from _support import (
    BIN,
    EXAMPLES,
    FIXTURES,
    RayCluster,
    cached_bentos,
    deployed,
    load_module,
    run_driver,
)

import bentoml_ray
from bentoml_ray import InvalidArgument, MissingColumn

REVIEWS = ["great fast", "awful and slow", "fine", "I love it, GOOD!", "broken", "meh"] * 20


def iris_rows(count: int) -> list[list[float]]:
    rng = np.random.default_rng(7)
    low, high = np.array([4.3, 2.0, 1.0, 0.1]), np.array([7.9, 4.4, 6.9, 2.5])
    return [list(map(float, row)) for row in rng.uniform(low, high, size=(count, 4)).round(1)]


@functools.cache
def _loaded_here(tag: str) -> Any:
    """The runner-based service loaded in this process, its runners local (once: BentoML
    allows one initialisation per runner)."""
    svc = bentoml.load(tag)
    for runner in svc.runners:
        runner.init_local(quiet=True)
    return svc


def iris_one_row_at_a_time(tag: str, rows: list[list[float]]) -> list[int]:
    classify = _loaded_here(tag).apis["classify"].func
    return [int(asyncio.run(classify(np.array([row])))[0]) for row in rows]


def scores_one_row_at_a_time(tag: str, reviews: list[str]) -> list[float]:
    scorer = bentoml.load(tag)()  # its Preprocessor an instance in this process too
    return [scorer.score([review])[0] for review in reviews]


def by_id(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda row: row["id"])  # Ray Data may reorder blocks


@pytest.mark.compat
def test_a_runner_api_over_a_dataset_answers_as_one_row_at_a_time(
    serve_url: str, iris_bento: str
) -> None:
    import ray.data

    rows = iris_rows(300)
    dataset = ray.data.from_items(
        [{"id": i, "input_series": np.array(row)} for i, row in enumerate(rows)]
    )
    answers = by_id(bentoml_ray.map_api(dataset, iris_bento, "classify", batch_size=64).take_all())
    assert [row["id"] for row in answers] == list(range(300))
    assert [row["output"] for row in answers] == iris_one_row_at_a_time(iris_bento, rows)


@pytest.mark.compat
def test_a_composed_1_2_api_over_a_dataset_answers_as_one_row_at_a_time(
    serve_url: str, review_scorer_bento: str
) -> None:
    """Through the offline example's function, as ``examples/review_scorer/offline.py``
    (and the docs, which include it) has it."""
    import ray.data

    example = load_module(EXAMPLES / "review_scorer" / "offline.py", "review_scorer_offline")
    dataset = ray.data.from_items([{"id": i, "reviews": r} for i, r in enumerate(REVIEWS)])
    answers = by_id(example.score_reviews(dataset, review_scorer_bento).take_all())
    assert [row["reviews"] for row in answers] == REVIEWS
    assert [row["output"] for row in answers] == scores_one_row_at_a_time(
        review_scorer_bento, REVIEWS
    )


def test_batches_and_failed_rows(serve_url: str) -> None:
    import ray.data

    probe = bentoml.load(
        "service:OfflineProbe", working_dir=str(FIXTURES / "offline_probe"), reload=True
    )
    texts = ray.data.from_items([{"id": i, "texts": "x" * (i % 7)} for i in range(100)])
    measured = by_id(bentoml_ray.map_api(texts, probe, "measure").take_all())
    assert [row["length"] for row in measured] == [i % 7 for i in range(100)]
    assert max(row["batch"] for row in measured) == 16  # its max_batch_size: Ray Data's batches
    larger = bentoml_ray.map_api(texts, probe, "measure", batch_size=50).take_all()
    assert max(row["batch"] for row in larger) == 50  # the caller's batch size, whole

    values = ray.data.from_items([{"id": i, "value": float(i - 2)} for i in range(6)])
    kept = by_id(bentoml_ray.map_api(values, probe, "scale", on_error="column").take_all())
    assert [row["output"] for row in kept] == [None, None, 0.0, 2.0, 4.0, 6.0]
    assert [row["error"] for row in kept[:3]] == [
        "ValueError: negative value -2.0", "ValueError: negative value -1.0", None,
    ]  # fmt: skip
    # A failed row reaches this process as itself, with the row and the API's error.
    with pytest.raises(bentoml_ray.RowFailed) as failed:
        bentoml_ray.map_api(values, probe, "scale").take_all()
    assert failed.value.api == "scale" and failed.value.row in (
        {"id": 0, "value": -2.0},
        {"id": 1, "value": -1.0},
    )
    assert isinstance(failed.value.error, ValueError), repr(failed.value.error)
    assert str(failed.value.error).startswith("negative value -")
    assert failed.value.summary.startswith("API 'scale' failed on the row {'id': ")
    with pytest.raises(MissingColumn, match=r"needs the column.*'value'"):
        bentoml_ray.map_api(texts, probe, "scale")  # refused before anything runs


def test_dependencies_from_a_running_application(serve_url: str, review_scorer_bento: str) -> None:
    import ray.data

    dataset = ray.data.from_items([{"id": i, "reviews": r} for i, r in enumerate(REVIEWS)])
    with pytest.raises(InvalidArgument, match="'offline-deps', which is not running"):
        bentoml_ray.map_api(dataset, review_scorer_bento, "score", dependencies_from="offline-deps")
    app = bentoml_ray.deployment(review_scorer_bento)
    with deployed(app, "offline-deps", route_prefix="/offline-deps"):
        answers = bentoml_ray.map_api(
            dataset, review_scorer_bento, "score", dependencies_from="offline-deps"
        ).take_all()
        metrics = httpx.get(f"{serve_url}/offline-deps/metrics", timeout=30).text
    assert [row["output"] for row in by_id(answers)] == scores_one_row_at_a_time(
        review_scorer_bento, REVIEWS
    )
    # The application's Preprocessor did the normalising, over handles: it counted the calls.
    calls = [
        line
        for line in metrics.splitlines()
        if line.startswith("bentoml_service_request_total")
        and 'runner_name="Preprocessor"' in line and 'endpoint="/normalize"' in line
    ]  # fmt: skip
    assert calls and sum(float(line.rsplit(" ", 1)[1]) for line in calls) >= 1, metrics[:2000]


def _batch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``bentoml-ray batch`` as a user runs it: on a cluster where ``env`` has
    ``RAY_ADDRESS``, else on a local Ray it starts itself."""
    return subprocess.run(
        [str(BIN / "bentoml-ray"), "batch", *args],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_batch_command_scores_files(
    ray_cluster: RayCluster, iris_bento: str, tmp_path: pathlib.Path
) -> None:
    import pandas as pd

    rows = iris_rows(20)
    columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    pd.DataFrame(rows, columns=columns).to_csv(tmp_path / "iris.csv", index=False)
    done = _batch(
        ray_cluster.env, iris_bento, "--api", "classify", "--input", str(tmp_path / "iris.csv"),
        "--output", str(tmp_path / "answers.jsonl"), "--input-columns", ",".join(columns),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Wrote the answers of 'classify'" in done.stdout
    written = [
        json.loads(line)
        for path in sorted((tmp_path / "answers.jsonl").iterdir())
        for line in path.read_text().splitlines()
    ]
    expected = dict(zip(map(tuple, rows), iris_one_row_at_a_time(iris_bento, rows), strict=True))
    assert {tuple(row[c] for c in columns): row["output"] for row in written} == expected
    # (A failed row's one line: test_cli's batch options test.)


OFFLINE_DRIVER = """
import json, sys
import numpy as np, ray, ray.data
import bentoml_ray
spec = json.loads(sys.argv[1])
ray.init(log_to_driver=False)
dataset = ray.data.from_items(
    [{"id": i, "input_series": np.array(row)} for i, row in enumerate(spec["rows"])])
scored = bentoml_ray.map_api(
    dataset, spec["tag"], "classify", batch_size=8, resources={spec["far"]: 1})
rows = sorted(scored.take_all(), key=lambda row: row["id"])
print(json.dumps({"answers": [int(row["output"]) for row in rows]}))
"""


def test_actors_on_a_node_without_the_bento_get_it_shipped(
    ray_cluster: RayCluster, empty_far_cache: pathlib.Path, iris_bento: str
) -> None:
    rows = iris_rows(40)
    spec = {"tag": iris_bento, "rows": rows, "far": ray_cluster.far_resource}
    report = run_driver(OFFLINE_DRIVER, spec, ray_cluster.env)
    assert report["answers"] == iris_one_row_at_a_time(iris_bento, rows)
    assert cached_bentos(empty_far_cache) == {iris_bento}  # shipped there, not found there
