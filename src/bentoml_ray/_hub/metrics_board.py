"""Every replica's latest metrics report, and the rounds in which ``/metrics`` asks for them.

A scrape is a round: the board moves to the next round, which wakes every replica's
waiting poll (``HubDeployment.poll``); each replica answers with its registry's families,
and the scrape answers once every live replica has reported for the round, or after
``REPORT_WAIT_S`` with the last report of those that have not. So ``N`` requests served
by any number of replicas read ``N`` on every scrape that follows them, and between
scrapes nothing is sent: serving a request costs the hub nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from .._defaults import HUB_LIVE_S, METRICS_REPORT_WAIT_S
from .exposition import Family, merge_reports

#: How long a scrape waits for reports; when a silent replica is taken for gone.
REPORT_WAIT_S, LIVE_S = METRICS_REPORT_WAIT_S, HUB_LIVE_S


@dataclass
class _Report:
    families: list[Family] = field(default_factory=list)
    round: int = 0
    seen_at: float = 0.0


class MetricsBoard:
    def __init__(self) -> None:
        self.round = 0
        self._reports: dict[str, _Report] = {}
        #: Scrapes waiting for their round's reports, by round (scrapes may overlap).
        self._waiting: dict[int, asyncio.Event] = {}

    def seen(self, replica: str) -> None:
        """``replica`` polled: it is alive."""
        self._reports.setdefault(replica, _Report()).seen_at = time.monotonic()

    def report(self, replica: str, round: int, families: list[Family]) -> None:
        entry = self._reports.setdefault(replica, _Report())
        entry.families, entry.round = families, max(entry.round, round)
        entry.seen_at = time.monotonic()
        done = min((report.round for report in self.live().values()), default=self.round)
        for waiting in [r for r in self._waiting if r <= done]:
            self._waiting.pop(waiting).set()

    def next_round(self) -> int:
        """Start a round; the replicas' polls see it and report."""
        self.round += 1
        return self.round

    async def collect(self, round: int) -> bytes:
        """Wait for ``round``'s reports (at most ``REPORT_WAIT_S``); merge the latest."""
        if any(report.round < round for report in self.live().values()):
            reported = self._waiting.setdefault(round, asyncio.Event())
            with contextlib.suppress(asyncio.TimeoutError):  # no news: answer as is
                await asyncio.wait_for(reported.wait(), REPORT_WAIT_S)
            self._waiting.pop(round, None)
        reports = {replica: report.families for replica, report in self._reports.items()}
        return merge_reports(reports, live=self.live())

    def live(self) -> dict[str, _Report]:
        """The replicas heard from within ``LIVE_S``."""
        now = time.monotonic()
        return {r: report for r, report in self._reports.items() if now - report.seen_at < LIVE_S}
