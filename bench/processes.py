"""The CPU of the servers a benchmark runs beside (PostgreSQL, the broker), found by the
loopback port each listens on, so a figure per tick or per event can name who spent it; how
busy the whole machine was, so a phase that had no core to spare says so; and how a worker's
event-loop thread spent a phase: on a core, waiting for one, or idle."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import psutil

# Whose CPU a benchmark reports beside the worker's, by the variable naming its server.
SERVERS = {"postgres": "SCRIBE_DATABASE_URL", "broker": "SCRIBE_KAFKA_URL"}
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def listening_pid(port: int) -> int | None:
    """The process listening on this TCP port of this machine, if any."""
    for connection in psutil.net_connections(kind="tcp"):
        if (
            connection.status == psutil.CONN_LISTEN
            and connection.laddr
            and connection.laddr.port == port
            and connection.pid is not None
        ):
            return int(connection.pid)
    return None


def server_pids(env: Mapping[str, str]) -> dict[str, int]:
    """The servers of `env` that run on this machine: name -> the pid listening on its port.
    A server elsewhere (a remote SCRIBE_*_URL) is left out: its CPU is not ours to read."""
    found: dict[str, int] = {}
    for name, variable in SERVERS.items():
        url = urlsplit(env.get(variable, "").split(",")[0])
        if url.hostname in LOCAL_HOSTS and url.port is not None:
            pid = listening_pid(url.port)
            if pid is not None:
                found[name] = pid
    return found


def tree_cpu_seconds(pids: Iterable[int]) -> float:
    """CPU (user and system) of these processes and their children, PostgreSQL's backends
    included; a child that exited and was reaped counts through its parent's children
    times, so a backend closed between two readings is not lost."""
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            times = root.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
            for child in root.children(recursive=True):
                times = child.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


# Linux counts guest time inside user and nice already: summing those too would count it twice.
_MACHINE_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
_IDLE_FIELDS = ("idle", "iowait")


@dataclass(frozen=True)
class MachineCpu:
    """CPU seconds of the whole machine so far, over all its cores."""

    busy: float
    total: float

    @classmethod
    def now(cls) -> MachineCpu:
        times = psutil.cpu_times()._asdict()
        total = sum(times.get(name, 0.0) for name in _MACHINE_FIELDS)
        idle = sum(times.get(name, 0.0) for name in _IDLE_FIELDS)
        return cls(total - idle, total)

    def busy_share_since(self, before: MachineCpu) -> float:
        """The share of every core's time that was busy between `before` and this reading."""
        total = self.total - before.total
        return (self.busy - before.busy) / total if total > 0 else 0.0


@dataclass(frozen=True)
class ThreadTime:
    """How long one thread has been on a core and how long it was runnable but waiting for one
    (Linux's /proc/PID/task/TID/schedstat), in seconds. Its CPU share alone cannot tell a
    thread that waited for I/O from one that waited for a core on a full machine."""

    running: float
    waiting: float

    @classmethod
    def of(cls, pid: int, tid: int | None = None) -> ThreadTime | None:
        """The thread's times so far; by default the process's main thread, where a worker
        runs its event loop. None where the kernel does not keep them (not Linux, or
        schedstats off) or the process is gone."""
        path = f"/proc/{pid}/task/{tid or pid}/schedstat"
        try:
            with open(path) as stats:
                running_ns, waiting_ns, _ = stats.read().split()
        except (OSError, ValueError):
            return None
        return cls(int(running_ns) / 1e9, int(waiting_ns) / 1e9)

    def shares_since(self, before: ThreadTime, wall_s: float) -> tuple[float, float, float]:
        """Of `wall_s` seconds since `before`: the shares on a core, waiting for one, and
        neither (waiting for I/O or a timer)."""
        if wall_s <= 0:
            return (0.0, 0.0, 0.0)
        running = (self.running - before.running) / wall_s
        waiting = (self.waiting - before.waiting) / wall_s
        return (running, waiting, max(0.0, 1.0 - running - waiting))


class ThreadWindow:
    """How one thread (by default a process's main thread, where a worker runs its event loop)
    spends the time from this reading on: `shares()` at the window's end."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.before = ThreadTime.of(pid) if pid is not None else None
        self.started = time.monotonic()

    def shares(self) -> tuple[float, float, float] | None:
        """On a core, waiting for one, idle, since this was made; None where not read."""
        after = ThreadTime.of(self.pid) if self.pid is not None else None
        if self.before is None or after is None:
            return None
        return after.shares_since(self.before, time.monotonic() - self.started)


def thread_time_text(shares: tuple[float, float, float]) -> str:
    running, waiting, idle = shares
    return f"on a core {running:.0%}, waiting for a core {waiting:.0%}, idle {idle:.0%}"
