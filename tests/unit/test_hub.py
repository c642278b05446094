"""The application's hub without Ray: merging replicas' metrics, the task board, scrape
rounds, and service modules whose metrics are made again when a Bento is loaded again."""

from __future__ import annotations

import asyncio

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bentoml_ray._bento.import_metrics import metrics_of_this_import
from bentoml_ray._hub import metrics_board, task_board
from bentoml_ray._hub.deployment import HubDeployment
from bentoml_ray._hub.exposition import Family, merge_reports, report


def _report(calls: int, in_flight: float, seconds: list[float]) -> list[Family]:
    registry = prometheus_client.CollectorRegistry()
    counter = prometheus_client.Counter("calls", "Calls", ["api"], registry=registry)
    counter.labels(api="a").inc(calls)
    prometheus_client.Gauge("in_flight", "In flight", registry=registry).set(in_flight)
    histogram = prometheus_client.Histogram(
        "seconds", "Seconds", buckets=(0.1, 1.0), registry=registry
    )
    for value in seconds:
        histogram.observe(value)
    return report(registry)


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def test_counters_and_histograms_are_summed_gauges_kept_per_replica() -> None:
    reports = {"A#1": _report(18, 2, [0.05, 0.5]), "B#2": _report(22, 3, [5.0])}
    merged = _samples(merge_reports(reports, live={"A#1", "B#2"}))
    assert merged[("calls_total", (("api", "a"),))] == 40
    assert merged[("seconds_bucket", (("le", "0.1"),))] == 1
    assert merged[("seconds_bucket", (("le", "1.0"),))] == 2
    assert merged[("seconds_bucket", (("le", "+Inf"),))] == 3
    assert merged[("seconds_count", ())] == 3
    assert merged[("seconds_sum", ())] == pytest.approx(5.55)
    assert merged[("in_flight", (("replica", "A#1"),))] == 2
    assert merged[("in_flight", (("replica", "B#2"),))] == 3
    assert not [name for name, _ in merged if name.endswith("_created")]


def test_a_gone_replica_keeps_its_counts_but_not_its_gauges() -> None:
    reports = {"A#1": _report(18, 2, []), "B#2": _report(22, 3, [])}
    merged = _samples(merge_reports(reports, live={"B#2"}))
    assert merged[("calls_total", (("api", "a"),))] == 40
    assert ("in_flight", (("replica", "A#1"),)) not in merged


def test_a_scrape_waits_for_every_live_replica_of_its_round() -> None:
    async def scenario() -> bytes:
        hub = HubDeployment()
        polls = [hub.poll(replica, (hub.id, 0), 5.0) for replica in ("A#1", "B#2")]
        waiting = [asyncio.ensure_future(poll) for poll in polls]
        await asyncio.sleep(0.01)
        scrape = asyncio.ensure_future(hub.scrape())
        orders = await asyncio.gather(*waiting)
        assert [order["round"] for order in orders] == [(hub.id, 1)] * 2
        hub.report("A#1", 1, _report(1, 0, []))
        await asyncio.sleep(0.01)
        assert not scrape.done(), "B#2 has not reported yet"
        hub.report("B#2", 1, _report(2, 0, []))
        return await asyncio.wait_for(scrape, 1)

    assert _samples(asyncio.run(scenario()))[("calls_total", (("api", "a"),))] == 3


def test_overlapping_scrapes_both_answer_once_the_replica_reports() -> None:
    async def scenario() -> list[bytes]:
        hub = HubDeployment()
        hub.report("A#1", 0, _report(1, 0, []))
        first = asyncio.ensure_future(hub.scrape())
        second = asyncio.ensure_future(hub.scrape())
        await asyncio.sleep(0.01)
        hub.report("A#1", 2, _report(2, 0, []))  # answering the later round answers both
        return list(await asyncio.wait_for(asyncio.gather(first, second), 0.5))

    for text in asyncio.run(scenario()):
        assert _samples(text)[("calls_total", (("api", "a"),))] == 2


def test_a_replica_that_answered_another_hub_reports_to_a_new_one_at_once() -> None:
    async def scenario() -> None:
        old, new = HubDeployment(), HubDeployment()
        assert (await old.poll("A#1", None, 5.0))["round"] == (old.id, 0)  # its first poll
        order = await asyncio.wait_for(new.poll("A#1", (old.id, 7), 5.0), 1)
        assert order["round"] == (new.id, 0)

    asyncio.run(scenario())


def test_a_replica_that_does_not_report_delays_a_scrape_only_so_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics_board, "REPORT_WAIT_S", 0.05)

    async def scenario() -> bytes:
        hub = HubDeployment()
        hub.report("A#1", 0, _report(5, 0, []))  # then silent
        return await hub.scrape()

    assert _samples(asyncio.run(scenario()))[("calls_total", (("api", "a"),))] == 5


def test_a_cancel_reaches_the_replica_that_runs_the_task() -> None:
    async def scenario() -> None:
        hub = HubDeployment()
        task_id = hub.new_task("square", b"{}", "A#1")
        waiting = asyncio.ensure_future(hub.poll("A#1", (hub.id, 0), 5.0))
        await asyncio.sleep(0.01)
        assert hub.cancel_task(task_id)["status"] == "canceled"
        assert (await asyncio.wait_for(waiting, 1))["cancel"] == [task_id]
        hub.set_task_result(task_id, b"late", "completed")  # the answer after the cancel
        assert hub.task_status(task_id)["status"] == "canceled"
        with pytest.raises(RuntimeError, match="not completed yet"):
            hub.task_result(task_id)

    asyncio.run(scenario())


def test_task_rows_and_their_retention(monkeypatch: pytest.MonkeyPatch) -> None:
    board = task_board.TaskBoard()
    with pytest.raises(KeyError):
        board.status("nope")
    task_id = board.new_entry("square", b"in", "A#1")
    assert board.status(task_id)["status"] == "in_progress"
    board.set_result(task_id, b"out", "completed")
    row, given, answer = board.get(task_id)
    assert (row["status"], given, answer) == ("completed", b"in", b"out")
    assert row["completed_at"] is not None
    monkeypatch.setattr(task_board, "RESULT_RETENTION_S", -1)  # everything ended is old
    board.set_result(board.new_entry("square", b"", "A#1"), b"", "failed")
    with pytest.raises(KeyError):
        board.status(task_id)


def test_metrics_a_module_makes_at_import_are_made_again_on_the_next_load() -> None:
    registry = prometheus_client.CollectorRegistry()
    for _ in range(3):  # a notebook deploying the same Bento three times
        with metrics_of_this_import(registry):
            prometheus_client.Counter("made_at_import", "At import", registry=registry).inc()
    assert registry.get_sample_value("made_at_import_total") == 1
