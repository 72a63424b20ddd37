"""Jaeger, a real trace backend for developers and tests, built from the Go module proxy.

`go.mod` and `go.sum` beside this file pin the release (`github.com/jaegertracing/jaeger`
v1.75.0, Jaeger v2's `cmd/jaeger`, declared as a `tool`). `build` compiles it once into a cache
outside git (`.scribe/tools/jaeger-<version>/jaeger`); a stamp holds the hash of the two files,
so a changed pin rebuilds and an unchanged one does nothing. The first build downloads the
modules and compiles for several minutes on two cores; later ones reuse Go's caches.

`running` starts it on loopback: Jaeger v2 is an OpenTelemetry collector, configured by a
YAML file written here: an OTLP/HTTP receiver, in-memory storage and the query service (its
HTTP API and UI), each on a free 127.0.0.1 port, the collector's own telemetry off. It stops
the process when the block ends, also on failure.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from devkit.stack.processes import (
    StackError,
    accepts_connections,
    end_child,
    free_ports,
    sigterm_as_interrupt,
)

MODULE_DIR = Path(__file__).resolve().parent
PACKAGE = "github.com/jaegertracing/jaeger/cmd/jaeger"
BUILD_TIMEOUT_S = 1800
READY_TIMEOUT_S = 60.0


def jaeger_version(go_mod: str) -> str:
    found = re.search(r"^\s*github\.com/jaegertracing/jaeger\s+(v\S+)", go_mod, re.M)
    if found is None:
        raise StackError(
            f"{MODULE_DIR / 'go.mod'}: no requirement of github.com/jaegertracing/jaeger"
        )
    return found.group(1)


def default_cache(root: Path = Path(".scribe/tools")) -> Path:
    return root / f"jaeger-{jaeger_version((MODULE_DIR / 'go.mod').read_text()).lstrip('v')}"


def build(cache: Path | None = None, report: Callable[[str], None] = lambda _: None) -> Path:
    """The `jaeger` binary of the pinned release, built once into `cache`."""
    pins = (MODULE_DIR / "go.mod").read_text() + (MODULE_DIR / "go.sum").read_text()
    version = jaeger_version(pins)
    cache = cache or default_cache()
    binary = cache / "jaeger"
    stamp = cache / ".go-sum-sha256"
    digest = hashlib.sha256(pins.encode()).hexdigest()
    if binary.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return binary
    go = shutil.which("go")
    if go is None:
        raise StackError(
            "building Jaeger needs Go 1.24+ (`go` on PATH): https://go.dev/doc/install, or on "
            "Debian: apt-get install golang"
        )
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / "jaeger.partial"
    report(f"building Jaeger {version} from the Go module proxy into {binary} (once) ...")
    started = time.monotonic()
    cmd = [go, "build", "-mod=readonly", "-o", str(partial.resolve()), PACKAGE]
    try:
        result = subprocess.run(
            cmd,
            cwd=MODULE_DIR,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
            # The pins are go.sum's: no toolchain download, no vendoring surprises.
            env={**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-buildvcs=false"},
        )
    except subprocess.TimeoutExpired:
        raise StackError(
            f"go build did not finish within {BUILD_TIMEOUT_S} s: {' '.join(cmd)}"
        ) from None
    if result.returncode != 0:
        raise StackError(
            f"go could not build Jaeger {version} (exit {result.returncode}):\n"
            f"$ {' '.join(cmd)}\n{(result.stdout + result.stderr).strip()}"
        )
    partial.rename(binary)
    stamp.write_text(digest + "\n")
    report(f"built Jaeger {version} in {time.monotonic() - started:.0f} s")
    return binary


def config_yaml(otlp_http_port: int, query_http_port: int, query_grpc_port: int) -> str:
    """A collector config: OTLP/HTTP in, memory storage, the query API; loopback only."""
    return f"""\
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: info

extensions:
  jaeger_query:
    enable_tracing: false  # else it exports its own spans to 127.0.0.1:4317
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query_http_port}
    grpc:
      endpoint: 127.0.0.1:{query_grpc_port}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000

receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp_http_port}

processors:
  batch:
    timeout: 200ms

exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


@dataclass(frozen=True)
class RunningJaeger:
    otlp_endpoint: str  # what OTEL_EXPORTER_OTLP_ENDPOINT takes: http://127.0.0.1:<port>
    query_url: str  # the query service's HTTP API and UI
    log_path: Path

    def traces(self, service: str, limit: int = 100) -> list[dict[str, Any]]:
        """The traces of `service` as Jaeger's query API gives them (`/api/traces`)."""
        answer = httpx.get(
            f"{self.query_url}/api/traces",
            params={"service": service, "limit": limit, "lookback": "1h"},
            timeout=10,
        )
        answer.raise_for_status()
        data = answer.json().get("data") or []
        return list(data)

    def services(self) -> list[str]:
        answer = httpx.get(f"{self.query_url}/api/services", timeout=10)
        answer.raise_for_status()
        return list(answer.json().get("data") or [])


@contextmanager
def running(
    binary: Path, workdir: Path, otlp_port: int | None = None, query_port: int | None = None
) -> Iterator[RunningJaeger]:
    """Jaeger on loopback ports (free ones unless given) for the duration of the block, then
    stopped (SIGTERM, SIGKILL after 10 s), also when the block fails or this process is sent
    SIGTERM."""
    with sigterm_as_interrupt():
        workdir.mkdir(parents=True, exist_ok=True)
        spare = iter(free_ports(3))
        otlp, query, query_grpc = otlp_port or next(spare), query_port or next(spare), next(spare)
        config = workdir / "jaeger.yaml"
        config.write_text(config_yaml(otlp, query, query_grpc))
        log_path = workdir / "jaeger.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [str(binary), "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not (accepts_connections(otlp) and accepts_connections(query)):
                if process.poll() is not None:
                    raise StackError(
                        f"jaeger exited ({process.returncode}):\n{log_path.read_text()}"
                    )
                if time.monotonic() > deadline:
                    waited = f"{READY_TIMEOUT_S:.0f} s"
                    raise StackError(
                        f"jaeger not listening after {waited}:\n{log_path.read_text()}"
                    )
                time.sleep(0.2)
            yield RunningJaeger(f"http://127.0.0.1:{otlp}", f"http://127.0.0.1:{query}", log_path)
        finally:
            end_child(process, signal.SIGTERM, 10)
