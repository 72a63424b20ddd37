"""Benchmark: how long a worker takes to start, and what it costs doing nothing.

    .venv/bin/python bench/worker_start.py --starts 2 --idle-seconds 20

On a fresh embedded stack (or the services `SCRIBE_*_URL` name), start `scribe worker` with
every flow, the way the tests do, `--starts` times in turn. For each start it prints the
seconds from the process's spawn to its `Ready` line and to `/ready` answering 200 (every
flow has joined its consumer group), the worker's CPU over `--idle-seconds` with no traffic
(its consumers' fetches, heartbeats, timers and metrics), and how long SIGTERM took to end
it. On the embedded broker the join is most of the wait: it holds a new group's first join
for half the session timeout (README, `SCRIBE_FAST_REBALANCE`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from devkit.harness import new_worker, services_for_tests

SETTLE_S = 3.0  # after /ready, before the idle window: the flows' first polls are over


def measure(env: dict[str, str], state_dir: Path, idle_seconds: float) -> dict[str, float]:
    worker = new_worker(env, state_dir)
    spawned = time.monotonic()
    try:
        worker.start()
        started = time.monotonic() - spawned
        worker.wait_consuming()
        ready = time.monotonic() - spawned
        time.sleep(SETTLE_S)
        cpu_before, window_began = worker.cpu_seconds(), time.monotonic()
        time.sleep(idle_seconds)
        idle_cpu = (worker.cpu_seconds() - cpu_before) / (time.monotonic() - window_began)
    finally:
        stopping = time.monotonic()
        worker.stop()
    return {
        "started_s": started,
        "ready_s": ready,
        "idle_cpu_share": idle_cpu,
        "stop_s": time.monotonic() - stopping,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=2)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="scribe-bench-start-") as tmp:
        state = Path(tmp)
        print("starting the embedded stack ...", flush=True)
        with services_for_tests(state / "stack") as env:
            for number in range(1, args.starts + 1):
                figures = measure(env, state / "workers", args.idle_seconds)
                print(
                    f"start {number}: Ready {figures['started_s']:.1f} s and /ready "
                    f"{figures['ready_s']:.1f} s after spawn; idle "
                    f"{figures['idle_cpu_share'] * 100:.1f} % of a core over "
                    f"{args.idle_seconds:.0f} s; SIGTERM to exit {figures['stop_s']:.1f} s",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
