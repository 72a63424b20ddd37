"""Send a workload at a target rate for a duration, through the `Publisher`, with a progress
line and a closing report. The achieved rate counts acknowledged events only, over the time
until the last acknowledgement."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from devkit.loadgen.workload import Malformed, Message, Workload
from topics.catalog import topic_for
from topics.publisher import Publisher

TICK_S = 0.005  # how often the loop tops up to the target count
GRACE_S = 1.0  # a sender that fell behind may catch up this long past the deadline
PROGRESS_EVERY_S = 1.0
BAR_WIDTH = 24


@dataclass
class LoadReport:
    target_rate: float
    seconds: float
    by_topic: Counter[str] = field(default_factory=Counter)
    malformed: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    acknowledged: int = 0
    failed: int = 0
    first_error: str = ""
    elapsed: float = 0.0  # from the first send to the last acknowledgement
    acked_per_second: list[int] = field(default_factory=list)

    @property
    def achieved_rate(self) -> float:
        return self.acknowledged / self.elapsed if self.elapsed else 0.0

    @property
    def ratio(self) -> float:
        """Achieved over target: 1.0 means the rate was held exactly."""
        return self.achieved_rate / self.target_rate if self.target_rate else 0.0

    @property
    def full_seconds(self) -> list[int]:
        """Acknowledgements per second, without the last (partial) second."""
        return self.acked_per_second[:-1] or self.acked_per_second

    def seconds_within(self, tolerance: float) -> int:
        """How many full seconds stayed within `tolerance` of the target rate."""
        low, high = self.target_rate * (1 - tolerance), self.target_rate * (1 + tolerance)
        return sum(low <= count <= high for count in self.full_seconds)

    def lines(self) -> list[str]:
        full_seconds = self.full_seconds
        lines = [
            "== loadgen summary ==",
            f"target    {self.target_rate:,.0f} events/s for {self.seconds:g} s "
            f"({round(self.target_rate * self.seconds):,} events)",
            f"achieved  {self.achieved_rate:,.0f} events/s: {self.acknowledged:,} acknowledged "
            f"in {self.elapsed:.2f} s ({self.ratio:.1%} of target)",
        ]
        if full_seconds:
            lines.append(
                f"per second (acknowledged): min {min(full_seconds):,}  median "
                f"{statistics.median(full_seconds):,.0f}  max {max(full_seconds):,}; "
                f"{self.seconds_within(0.1)} of {len(full_seconds)} within 10 % of target"
            )
        lines.append(f"{'topic':<22}{'events':>10}{'malformed':>11}")
        for name in sorted(self.by_topic.keys() | self.malformed.keys()):
            lines.append(f"{name:<22}{self.by_topic[name]:>10,}{self.malformed[name]:>11,}")
        if self.failed:
            lines.append(
                f"FAILED    {self.failed:,} not acknowledged; first error: {self.first_error}"
            )
        return lines


class Progress:
    """A bar redrawn in place on a terminal; a plain line per interval otherwise (logs, CI)."""

    def __init__(self, stream: TextIO | None = None, every_s: float = PROGRESS_EVERY_S) -> None:
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.in_place = self.stream.isatty()
        self._next = 0.0
        self._last = (0.0, 0)

    def update(
        self, elapsed: float, seconds: float, report: LoadReport, final: bool = False
    ) -> None:
        if not final and elapsed < self._next:
            return
        self._next = elapsed + self.every_s
        last_elapsed, last_acked = self._last
        window = elapsed - last_elapsed
        rate = (report.acknowledged - last_acked) / window if window > 0 else 0.0
        self._last = (elapsed, report.acknowledged)
        done = min(1.0, elapsed / seconds) if seconds else 1.0
        filled = round(done * BAR_WIDTH)
        line = (
            f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {done:4.0%} {elapsed:5.1f}/{seconds:g} s"
            f"  sent {report.sent:,}  acked {report.acknowledged:,}  {rate:,.0f} events/s"
        )
        if report.failed:
            line += f"  FAILED {report.failed:,}"
        if self.in_place:
            self.stream.write("\r" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


async def run_load(
    publisher: Publisher,
    workload: Workload,
    rate: float,
    seconds: float,
    *,
    on_sent: Callable[[Message], None] | None = None,
    progress: Progress | None = None,
) -> LoadReport:
    """Send `rate * seconds` messages, spread evenly over `seconds`, and wait for every
    acknowledgement. A generator or broker that cannot keep up shows as a lower achieved rate;
    what is still unsent `GRACE_S` after the deadline is not sent."""
    report = LoadReport(rate, seconds)
    total = round(rate * seconds)
    pending: set[asyncio.Future[Any]] = set()
    started = time.monotonic()
    last_ack = started

    def acknowledged(future: asyncio.Future[Any]) -> None:
        nonlocal last_ack
        pending.discard(future)
        if future.cancelled() or future.exception() is not None:
            report.failed += 1
            report.first_error = report.first_error or repr(
                future.exception() if not future.cancelled() else "cancelled"
            )
            return
        last_ack = time.monotonic()
        report.acknowledged += 1
        second = int(last_ack - started)
        while len(report.acked_per_second) <= second:
            report.acked_per_second.append(0)
        report.acked_per_second[second] += 1

    while report.sent < total and (elapsed := time.monotonic() - started) < seconds + GRACE_S:
        due = min(total, int(elapsed * rate) + 1)
        while report.sent < due:
            message = workload.next()
            if isinstance(message, Malformed):
                future = await publisher.enqueue_raw(message.topic, message.value, message.key)
                report.malformed[message.topic] += 1
            else:
                future = await publisher.enqueue(message)
                report.by_topic[topic_for(message).name] += 1
            report.sent += 1
            pending.add(future)
            future.add_done_callback(acknowledged)
            if on_sent is not None:
                on_sent(message)
        if progress is not None:
            progress.update(elapsed, seconds, report)
        await asyncio.sleep(TICK_S)
    if pending:
        await asyncio.wait(set(pending))
    await asyncio.sleep(0)  # let the last done-callbacks run
    report.elapsed = max(last_ack - started, 1e-9)
    if progress is not None:
        progress.update(time.monotonic() - started, seconds, report, final=True)
    return report
