"""SIGTERM to a process holding the embedded stack (a CI job's timeout, `timeout`, `kill`)
stops the servers it started, as Ctrl-C does, instead of leaving them running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.stack import STATE_FILE
from devkit.stack.processes import sigterm_as_interrupt
from tests.devkit.stack.test_local_stack import _processes_under, _running

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def default_sigterm() -> Iterator[None]:
    """SIGTERM at its default for the test (the session's stack may handle it already)."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigterm_interrupts_the_block_once_and_then_is_the_default_again(
    default_sigterm: None,
) -> None:
    with pytest.raises(KeyboardInterrupt), sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # interrupted well before this ends
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_second_sigterm_does_not_cut_the_clean_up_short(default_sigterm: None) -> None:
    cleaned_up = False
    with pytest.raises(KeyboardInterrupt), sigterm_as_interrupt():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # ignored while the clean-up runs
            time.sleep(0.1)
            cleaned_up = True
    assert cleaned_up


def test_a_process_that_handles_sigterm_itself_keeps_its_handler(default_sigterm: None) -> None:
    received: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _: received.append(signum))
    with sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
    assert received == [signal.SIGTERM]


def _started(args: list[str], ready: str) -> tuple[subprocess.Popen[str], str]:
    """`args` running from the repository, once it printed a line starting with `ready`."""
    process = subprocess.Popen(
        args,
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("SCRIBE_")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith(ready):
            return process, line
    process.kill()
    raise AssertionError(f"ended before printing {ready!r}:\n{''.join(seen)}")


def _servers_of(stack_root: Path) -> list[int]:
    """The pids the stack under `stack_root` recorded: every server it started."""
    recorded = json.loads((stack_root / STATE_FILE).read_text())
    return [entry["pid"] for entry in recorded.values()]


def _terminated(process: subprocess.Popen[str]) -> str:
    """SIGTERM, then what it printed until it ended (within 60 s)."""
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    return output


@pytest.mark.integration
def test_sigterm_to_a_script_holding_the_stack_stops_its_servers(tmp_path: Path) -> None:
    root = tmp_path / "stack"
    script = (
        "import time\n"
        "from pathlib import Path\n"
        "from devkit.stack import LocalStack\n"
        f"with LocalStack(Path({str(root)!r})).running():\n"
        "    print('stack up', flush=True)\n"
        "    time.sleep(120)\n"
    )
    process, _ = _started([sys.executable, "-c", script], "stack up")
    try:
        servers = _servers_of(root)
        assert len(servers) == 5 and all(_running(pid) for pid in servers)
        output = _terminated(process)
    finally:
        process.kill()
    assert process.returncode != 0, output
    assert not any(_running(pid) for pid in servers), output
    assert _processes_under(root) == [], output


@pytest.mark.integration
def test_sigterm_to_pytest_stops_the_servers_of_its_session(tmp_path: Path) -> None:
    """What a CI job's timeout sends: pytest ends the session, and its fixtures stop the
    stack instead of leaving it running for the next job."""
    test_file = tmp_path / "test_held.py"
    test_file.write_text(
        "import time\n"
        "def test_held(state_dir, services):\n"
        "    print('state dir', state_dir, flush=True)\n"
        "    time.sleep(120)\n"
    )
    pytest_args = ["-p", "tests.conftest", "-p", "no:cacheprovider", "-s", "-q", str(test_file)]
    process, ready = _started([sys.executable, "-m", "pytest", *pytest_args], "state dir")
    state_dir = Path(ready.removeprefix("state dir").strip())
    try:
        servers = _servers_of(state_dir / "stack")
        assert len(servers) == 5 and all(_running(pid) for pid in servers)
        output = _terminated(process)
    finally:
        process.kill()
    assert "KeyboardInterrupt" in output, output
    assert not any(_running(pid) for pid in servers), output
    assert _processes_under(state_dir) == [], output
