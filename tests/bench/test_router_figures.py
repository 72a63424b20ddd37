"""`make bench` reads the router script's figures from what it prints: each line it looks for is
one the script writes (`bench/router.py`'s `describe` format)."""

from __future__ import annotations

import socket
import time

import pytest

from bench.cases.flows import RouterBench, RouterDecideBench
from bench.processes import ThreadWindow
from bench.router import (
    LAYOUTS,
    cpu_line,
    decide_lines,
    describe,
    lanes_worker,
    lateness_line,
    loop_thread_line,
    worker_pid,
)

LINES = [
    *decide_lines(2000, 0.8, 0.0002),
    f"latency added by the pipeline (minus the direct median): {describe([4.0, 6.0, 9.0])}",
    f"latency at 200/s through Kafka (achieved 199/s): added {describe([5.0, 7.0, 11.0])}",
    f"  baseline, one bare Kafka hop (publish -> a plain consumer): {describe([1.0, 3.0])}",
    f"latency at 200/s through the HTTP API (achieved 198/s): added {describe([6.0, 12.0])}; "
    f"x-scribe-overhead-ms {describe([1.0, 2.0])}",
    f"latency at 1,000/s through Kafka (achieved 990/s): added {describe([8.0, 13.0])}",
    f"latency at 1,000/s through the HTTP API (achieved 970/s): added {describe([9.0, 14.0])}",
]


def test_every_router_figure_is_read_from_the_scripts_lines() -> None:
    figures = RouterBench().parse("\n".join(LINES), [])
    assert figures == {
        "decide_per_s": 2500.0,
        "added_latency_p50_ms": 6.0,
        "added_latency_p99_ms": 9.0,
        "added_p99_kafka_200_per_s_ms": 11.0,
        "added_p99_api_200_per_s_ms": 12.0,
        "bare_hop_p99_200_per_s_ms": 3.0,
    }


def test_a_missing_rate_line_is_an_error_not_a_number() -> None:
    with pytest.raises(ValueError, match="200/s through the HTTP API"):
        RouterBench().parse(
            "\n".join(line for line in LINES if "200/s through the HTTP" not in line), []
        )


def test_decide_per_worker_and_its_cpu_are_read_from_the_scripts_lines() -> None:
    figures = RouterDecideBench().parse("\n".join(decide_lines(10_000, 2.0, 0.000_16)), [])
    assert figures == {
        "decide_per_s": 5000.0,
        "decide_cpu_ms_per_decision": 0.16,
        "decisions_per_cpu_second": 6250.0,
    }


def test_the_loop_lateness_line_reads_the_probe_s_buckets_between_two_readings() -> None:
    inf = float("inf")
    before = {0.001: 10.0, 0.01: 10.0, 0.1: 10.0, inf: 10.0}
    # 100 wake-ups since: 95 on time, 4 late by 1-10 ms, 1 by 10-100 ms.
    after = {0.001: 105.0, 0.01: 109.0, 0.1: 110.0, inf: 110.0}
    line = lateness_line("the worker", before, after)
    assert line == ("  the worker: event loop late p99 <= 10 ms; 1 of 100 wake-ups over 10 ms late")
    assert "not probed" in lateness_line("the worker", {}, {})


def test_the_cpu_line_gives_the_worker_s_cpu_per_request_and_its_share_of_a_core() -> None:
    line = cpu_line("the lanes' worker", 4.5, 2000, 10.0)
    assert line == "  the lanes' worker: CPU 2.25 ms per request (45 % of a core)"
    assert "not measured" in cpu_line("the worker", float("nan"), 2000, 10.0)
    assert "not measured" in cpu_line("the worker", 1.0, 0, 10.0)


def test_the_lanes_figures_come_from_the_worker_that_hosts_the_lanes() -> None:
    # router-only puts the router (decide and the lanes) first and the other flows last.
    assert {layout: lanes_worker(layout) for layout in LAYOUTS} == {
        "one": 0,
        "router-only": 0,
        "decide-apart": 1,
    }


def test_a_workers_event_loop_thread_is_found_by_its_port_and_its_phase_read() -> None:
    with socket.socket() as listener:  # this process stands in for the worker
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        thread = ThreadWindow(worker_pid(f"http://127.0.0.1:{listener.getsockname()[1]}"))
        end = time.process_time() + 0.2
        while time.process_time() < end:
            pass
        shares = thread.shares()
    assert shares is not None
    running, waiting, _ = shares
    assert running + waiting >= 0.8  # busy throughout: on a core or waiting for one
    assert loop_thread_line("the worker", (0.62, 0.2, 0.18)) == (
        "  the worker's event-loop thread: on a core 62%, waiting for a core 20%, idle 18%"
    )
    assert "not read" in loop_thread_line("the worker", None)
