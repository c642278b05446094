"""Ray Serve batching and streaming of runner methods, observed through a probe runnable."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from _support import deployed

import bentoml_ray

CONCURRENT = 24
KINDS = ("ndarray", "frame", "list")


async def _probe_concurrently(url: str, runner: str, kind: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=30) as client:

        async def one(value: int) -> dict[str, Any]:
            body = {"runner": runner, "kind": kind, "values": [value]}
            response = await client.post(f"{url}/probe", json=body)
            assert response.status_code == 200, response.text
            result: dict[str, Any] = response.json()
            assert result["values"] == [value], "a caller got someone else's rows"
            return result

        return list(await asyncio.gather(*(one(v) for v in range(100, 100 + CONCURRENT))))


def _batch_sizes(url: str, runner: str, kind: str) -> list[int]:
    results = asyncio.run(_probe_concurrently(url, runner, kind))
    return [seen for result in results for seen in result["seen"]]


@pytest.fixture(scope="module")
def batched_url(serve_url: str, probe_bento: str) -> Iterator[str]:
    def settings(size: int) -> dict[str, Any]:
        return {"max_batch_size": size, "batch_wait_timeout_s": 0.25}

    app = bentoml_ray.deployment(
        probe_bento,
        enable_batching=True,
        batching_config={
            "small_batches": {
                m: settings(2) for m in ("ndarray_batch", "frame_batch", "list_batch")
            },
            "large_batches": {
                m: settings(16) for m in ("ndarray_batch", "frame_batch", "list_batch")
            },
        },
    )
    with deployed(app, "batching"):
        yield serve_url


@pytest.mark.parametrize("kind", KINDS)
def test_each_runner_batches_with_its_own_settings(batched_url: str, kind: str) -> None:
    small = _batch_sizes(batched_url, "small", kind)
    large = _batch_sizes(batched_url, "large", kind)
    assert max(small) == 2 and min(small) >= 1, small
    assert 2 < max(large) <= 16, large


def test_non_batchable_method_and_sync_api_still_work_and_carry_model_ids(
    batched_url: str,
) -> None:
    response = httpx.post(f"{batched_url}/describe", json={"values": [1, 2, 3]})
    assert response.status_code == 200, response.text
    assert response.json() == {"count": 3, "model": ""}
    # The request's model id travels from the sync API's thread to the runner's replica.
    named = {"serve_multiplexed_model_id": "tenant-a"}
    response = httpx.post(f"{batched_url}/describe", json={"values": [1]}, headers=named)
    assert response.json() == {"count": 1, "model": "tenant-a"}


def _deployments(app_name: str) -> set[str]:
    from ray import serve

    hub = bentoml_ray.hub_deployment_name("batch_probe")  # every application has one
    return set(serve.status().applications[app_name].deployments) - {hub}


def test_an_embedded_runner_has_no_deployment_and_batches_in_the_api_server(
    batched_url: str,
) -> None:
    """large_batches is declared embedded; the module fixture's batching test covers it."""
    assert _deployments("batching") == {"batch_probe", "batch_probe.runner.small_batches"}


def test_embedded_is_an_option_both_ways(serve_url: str, probe_bento: str) -> None:
    """Options move small_batches into the API server and large_batches out of it; sync
    calls, streams and batches still work."""
    app = bentoml_ray.deployment(
        probe_bento,
        None,
        {"small_batches": {"embedded": True}, "large_batches": {"embedded": False}},
        enable_batching=True,
        batching_config={"small_batches": {"list_batch": {"max_batch_size": 4}}},
    )
    with deployed(app, "swapped", route_prefix="/swapped"):
        url = f"{serve_url}/swapped"
        assert _deployments("swapped") == {"batch_probe", "batch_probe.runner.large_batches"}
        assert 1 < max(_batch_sizes(url, "small", "list")) <= 4
        named = {"serve_multiplexed_model_id": "tenant-b"}  # read in the API server here
        response = httpx.post(f"{url}/describe", json={"values": [1, 2]}, headers=named)
        assert response.json() == {"count": 2, "model": "tenant-b"}, response.text
        with httpx.stream("POST", f"{url}/countdown", json={"n": 2}, timeout=30) as streamed:
            assert "".join(streamed.iter_text()) == "2\n1\n"
        # In its own deployment now, batching with Ray's defaults (max_batch_size 10).
        assert 1 < max(_batch_sizes(url, "large", "list")) <= 10


def test_nothing_is_batched_without_enable_batching(serve_url: str, probe_bento: str) -> None:
    with deployed(bentoml_ray.deployment(probe_bento), "unbatched", route_prefix="/unbatched"):
        for runner in ("small", "large"):
            assert set(_batch_sizes(f"{serve_url}/unbatched", runner, "ndarray")) == {1}


def test_a_streaming_runner_method_streams_chunk_by_chunk(batched_url: str) -> None:
    started = time.monotonic()
    arrivals: list[tuple[float, str]] = []
    with httpx.stream("POST", f"{batched_url}/countdown", json={"n": 4}, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        for chunk in response.iter_text():
            arrivals.append((time.monotonic() - started, chunk))
    assert "".join(chunk for _, chunk in arrivals) == "4\n3\n2\n1\n"
    first, last = arrivals[0][0], arrivals[-1][0]
    # The generator sleeps 0.4 s between chunks: the first must arrive long before the end.
    assert last - first >= 0.9, arrivals
