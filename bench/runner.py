"""Run every case side by side, run after run, on one broker; print the table and write
`bench/results/latest.json` (plus a timestamped copy).

Each run measures every case of a group once, in turn, so they share the machine's noise (the
usage group: the limit, the peers and ours; each other flow is a group of its own, run after);
every figure is min / median / max over the runs, and each ratio is taken run by run (ours and
its baseline measured minutes apart at most) before its min / median / max.

    make bench                       # or: scribe bench, python -m bench
    BENCH_RUNS=5 BENCH_EVENTS=60000 make bench
    BENCH_CASES=limit,ours make bench   # only the cases whose names start so

On the embedded stack by default; SCRIBE_KAFKA_URL (and SCRIBE_DATABASE_URL, SCRIBE_REDIS_URL)
point it at other servers, e.g. Apache Kafka from `scripts/kafka.sh up`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.cases import Case, Context, Ratio, all_cases, all_ratios
from devkit.harness import SERVICE_VARS
from devkit.stack import LocalStack

RESULTS = Path(__file__).parent / "results"


def say(line: str) -> None:
    print(f"[bench {datetime.now():%H:%M:%S}] {line}", file=sys.stderr, flush=True)


@dataclass
class Figure:
    """One (case, metric): its value in each run, or why it has none."""

    case: str
    metric: str
    unit: str
    values: list[float] = field(default_factory=list)
    missing: str | None = None

    def row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"case": self.case, "metric": self.metric, "unit": self.unit}
        if self.values:
            row |= {
                "min": min(self.values),
                "median": statistics.median(self.values),
                "max": max(self.values),
                "runs": len(self.values),
            }
        else:
            row |= {"min": None, "median": None, "max": None, "runs": 0}
        if self.missing:
            row["missing"] = self.missing
        return row


@contextmanager
def services(state_dir: Path) -> Iterator[tuple[dict[str, str], str]]:
    """The servers the cases run against, and a line naming the broker. SCRIBE_*_URL that
    are set win; the embedded stack provides the rest (and is stopped afterwards)."""
    given = {name: os.environ[name] for name in SERVICE_VARS if os.environ.get(name)}
    kafka = "SCRIBE_KAFKA_URL" in given
    broker = f"Kafka at {given['SCRIBE_KAFKA_URL']}" if kafka else "embedded Tansu"
    if len(given) == len(SERVICE_VARS):
        yield given | {"SCRIBE_FAST_REBALANCE": os.environ.get("SCRIBE_FAST_REBALANCE", "")}, broker
        return
    with LocalStack(state_dir).running(report=say) as env:
        yield env | given, broker


def run_cases(
    cases: list[Case], ratios: list[Ratio], ctx: Context
) -> tuple[list[Figure], list[Figure]]:
    figures: dict[tuple[str, str], Figure] = {}
    active: list[Case] = []
    for case in cases:
        for metric in case.metrics:
            figures[(case.name, metric.name)] = Figure(case.name, metric.name, metric.unit)
        reason = case.unavailable(ctx)
        if reason:
            say(f"{case.name}: not measured: {reason}")
            for metric in case.metrics:
                figures[(case.name, metric.name)].missing = reason
        else:
            active.append(case)
    per_run: list[dict[tuple[str, str], float]] = [{} for _ in range(ctx.runs)]
    groups = list(dict.fromkeys(case.group for case in active))
    for group, run in ((g, r) for g in groups for r in range(1, ctx.runs + 1)):
        measured = per_run[run - 1]
        for case in [c for c in active if c.group == group]:
            started = time.monotonic()
            say(f"run {run}/{ctx.runs}: {case.name} ...")
            try:
                values = case.measure(ctx)
            except Exception as error:
                reason = f"failed in run {run}: {error!r}"
                say(f"{case.name}: {reason}\n{traceback.format_exc()}")
                for metric in case.metrics:
                    figures[(case.name, metric.name)].missing = reason
                active.remove(case)
                continue
            for name, value in values.items():
                figures[(case.name, name)].values.append(value)
                measured[(case.name, name)] = value
            shown = ", ".join(
                f"{name} {value:,.1f}" if value < 100 else f"{name} {value:,.0f}"
                for name, value in values.items()
            )
            say(f"run {run}/{ctx.runs}: {case.name}: {shown} ({time.monotonic() - started:.0f} s)")
    ratio_figures = []
    for ratio in ratios:
        figure = Figure(ratio.name, ratio.metric, "x")
        for measured in per_run:
            ours, base = measured.get(ratio.ours), measured.get(ratio.baseline)
            if ours is not None and base:
                figure.values.append(ours / base)
        if not figure.values:
            figure.missing = f"{ratio.baseline[0]} or {ratio.ours[0]} was not measured"
        ratio_figures.append(figure)
    return list(figures.values()), ratio_figures


def table(figures: list[Figure]) -> str:
    lines = [f"{'case':<36}{'metric':<22}{'min':>12}{'median':>12}{'max':>12}  unit"]
    for f in figures:
        if f.values:
            cells = "".join(_cell(v) for v in (min(f.values), statistics.median(f.values)))
            cells += _cell(max(f.values))
            lines.append(f"{f.case:<36}{f.metric:<22}{cells}  {f.unit}")
        else:
            lines.append(f"{f.case:<36}{f.metric:<22}{'-':>12}{'-':>12}{'-':>12}  {f.unit}")
            lines.append(f"{'':<36}  not measured: {f.missing}")
    return "\n".join(lines)


def _cell(value: float) -> str:
    return f"{value:>12,.0f}" if abs(value) >= 100 else f"{value:>12,.2f}"


def main(argv: list[str] | None = None, report: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "3")))
    parser.add_argument("--events", type=int, default=int(os.environ.get("BENCH_EVENTS", "40000")))
    parser.add_argument(
        "--cases",
        default=os.environ.get("BENCH_CASES", ""),
        help="comma-separated name prefixes (default: every case)",
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.events < 1000:
        parser.error("--runs must be >= 1 and --events >= 1000")
    prefixes = [p.strip() for p in args.cases.split(",") if p.strip()]
    cases = [c for c in all_cases() if not prefixes or c.name.startswith(tuple(prefixes))]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="scribe-bench-") as tmp:
        state_dir = Path(tmp)
        with services(state_dir / "stack") as (env, broker):
            ctx = Context(env, state_dir, args.events, args.runs, broker, say)
            say(f"{len(cases)} cases x {args.runs} runs on {broker}, {args.events:,} events")
            figures, ratios = run_cases(cases, all_ratios(), ctx)
    elapsed = time.monotonic() - started
    report(
        f"\n{broker}; {args.events:,} usage events per run; {args.runs} runs; "
        f"{os.cpu_count()} CPUs; {elapsed / 60:.1f} min\n"
    )
    report(table(figures))
    report("\nratios, run by run (ours / baseline):")
    report(table(ratios))
    rows = [f.row() for f in figures + ratios]
    RESULTS.mkdir(exist_ok=True)
    text = json.dumps(rows, indent=2) + "\n"
    (RESULTS / "latest.json").write_text(text)
    (RESULTS / f"bench-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json").write_text(text)
    say(f"results in {RESULTS / 'latest.json'}")
    return 0
