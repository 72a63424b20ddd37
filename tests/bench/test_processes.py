"""The servers' CPU a benchmark reports: found by their listening port, children included."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from bench.processes import (
    MachineCpu,
    ThreadTime,
    ThreadWindow,
    listening_pid,
    server_pids,
    thread_time_text,
    tree_cpu_seconds,
)

BURN = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass\n"


def test_the_process_listening_on_a_loopback_port_is_found() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert listening_pid(port) == os.getpid()
        env = {"SCRIBE_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/postgres"}
        assert server_pids(env) == {"postgres": os.getpid()}
    assert listening_pid(port) is None


def test_a_server_on_another_machine_is_left_out() -> None:
    env = {"SCRIBE_KAFKA_URL": "kafka://broker.example:9092", "SCRIBE_DATABASE_URL": ""}
    assert server_pids(env) == {}


def test_a_childs_cpu_counts_while_it_runs_and_after_it_exits() -> None:
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            f"subprocess.run([sys.executable, '-c', {BURN!r}])\n"
            "print('reaped', flush=True)\n"
            "time.sleep(30)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while tree_cpu_seconds([parent.pid]) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tree_cpu_seconds([parent.pid]) >= 0.3  # the child, counted as it burns
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "reaped"
        # The child burned 0.5 s and is gone: it counts through the parent's children times.
        assert tree_cpu_seconds([parent.pid]) >= 0.45
    finally:
        parent.kill()
        parent.wait()


def test_the_machines_busy_share_is_what_was_not_idle_between_two_readings() -> None:
    before = MachineCpu(busy=10.0, total=40.0)
    assert MachineCpu(busy=25.0, total=60.0).busy_share_since(before) == 0.75
    assert MachineCpu(busy=10.0, total=40.0).busy_share_since(before) == 0.0  # no time passed


def test_a_busy_loop_shows_in_the_machines_busy_share() -> None:
    before = MachineCpu.now()
    end = time.process_time() + 0.5
    while time.process_time() < end:
        pass
    after = MachineCpu.now()
    assert after.total > before.total
    # This process alone kept one of the machine's cores busy for most of the interval (the
    # counters tick every 10 ms, and it may have waited for a core meanwhile).
    assert after.busy_share_since(before) >= 0.7 / (os.cpu_count() or 1)


def test_a_threads_time_on_a_core_and_waiting_for_one_add_up_to_its_wall_time_when_busy() -> None:
    before, started = ThreadTime.of(os.getpid()), time.monotonic()
    assert before is not None, "Linux keeps schedstat for every thread"
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    after = ThreadTime.of(os.getpid())
    assert after is not None
    running, waiting, idle = after.shares_since(before, time.monotonic() - started)
    # Busy the whole time: on a core or waiting for one, never idle (a little slack for the
    # readings themselves and the clock's granularity).
    assert running >= 0.3 / (time.monotonic() - started) * 0.9
    assert running + waiting >= 0.9
    assert idle <= 0.1


def test_a_sleeping_thread_is_idle() -> None:
    before, started = ThreadTime.of(os.getpid()), time.monotonic()
    assert before is not None
    time.sleep(0.3)
    after = ThreadTime.of(os.getpid())
    assert after is not None
    running, waiting, idle = after.shares_since(before, time.monotonic() - started)
    assert idle >= 0.8
    assert thread_time_text((running, waiting, idle)).endswith(f"idle {idle:.0%}")


def test_a_thread_that_is_gone_has_no_times() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert ThreadTime.of(child.pid) is None


def test_a_window_over_a_thread_that_cannot_be_read_claims_nothing() -> None:
    assert ThreadWindow(None).shares() is None
    window = ThreadWindow(os.getpid())
    time.sleep(0.1)
    shares = window.shares()
    assert shares is not None and shares[2] >= 0.5  # asleep: idle
