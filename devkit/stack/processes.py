"""Starting, finding and stopping the stack's server processes.

Each process is recorded by pid *and* start time, so `down` never signals a process that merely
reuses a recorded pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import psutil


class StackError(RuntimeError):
    """A service of the embedded stack could not be started or stopped."""


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    started_at: float

    def alive(self) -> bool:
        try:
            proc = psutil.Process(self.pid)
            return (
                abs(proc.create_time() - self.started_at) < 1.0
                and proc.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.Error:
            return False

    @classmethod
    def of(cls, pid: int) -> ProcessRecord:
        return cls(pid=pid, started_at=psutil.Process(pid).create_time())


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` different free ports. Each socket stays bound until all are chosen: closed one
    by one, the kernel may hand the same port out twice (two Jaeger listeners got one port)."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def accepts_connections(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def spawn(cmd: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> ProcessRecord:
    """Start a server detached from our session, so it outlives `scribe stack up`."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(cmd),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    return ProcessRecord.of(proc.pid)


def wait_until(
    check: Callable[[], bool],
    what: str,
    timeout: float,
    alive: Callable[[], bool] | None = None,
    log_path: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if alive is not None and not alive():
            raise StackError(f"{what} exited during start-up{_log_tail(log_path)}")
        time.sleep(0.1)
    raise StackError(f"{what} did not become ready within {timeout:.0f} s{_log_tail(log_path)}")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM (a CI job's timeout, `timeout`, `kill`) interrupts the
    main thread as Ctrl-C does, so the `finally` blocks that stop our servers run. By default
    SIGTERM ends a process at once, and the servers it started, each in a session of its own,
    would outlive it. A second SIGTERM is ignored, so it cannot cut that clean-up short
    (SIGKILL still can). Left as it is off the main thread, or where the process already
    handles SIGTERM (a stack inside another stack, a server of its own)."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def end_child(process: subprocess.Popen[Any], sig: int, grace_s: float) -> None:
    """Send `sig` to a child this process started and wait for it; SIGKILL after `grace_s`."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def terminate(record: ProcessRecord, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`; a process already gone is fine."""
    if not record.alive():
        return
    try:
        os.kill(record.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not record.alive():
            return
        time.sleep(0.05)
    try:
        os.kill(record.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    psutil.wait_procs([psutil.Process(record.pid)], timeout=5)


def _log_tail(log_path: Path | None, lines: int = 20) -> str:
    if log_path is None or not log_path.exists():
        return ""
    tail = log_path.read_text(errors="replace").splitlines()[-lines:]
    return f"; last lines of {log_path}:\n" + "\n".join(tail)
