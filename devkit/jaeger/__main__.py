"""`python -m devkit.jaeger`: build Jaeger once, run it on loopback until Ctrl-C, and print
the variables that send a worker's or gateway's spans to it. `--build-only` builds it and stops
(`make test-engine` does, so the tracing test's set-up does not spend its time limit on a first
build)."""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path

import click

from devkit.jaeger import build, running


@click.command()
@click.option("--otlp-port", default=4318, show_default=True, help="OTLP/HTTP receiver port.")
@click.option("--query-port", default=16686, show_default=True, help="Query API port.")
@click.option("--dir", "workdir", default=".scribe/jaeger", show_default=True, type=Path)
@click.option("--build-only", is_flag=True, help="Build (or find) the binary, print its path.")
def main(otlp_port: int, query_port: int, workdir: Path, build_only: bool) -> None:
    binary = build(report=lambda line: click.echo(line, err=True))
    if build_only:
        click.echo(binary)
        return
    with running(binary, workdir, otlp_port, query_port) as jaeger:
        click.echo(f"export OTEL_EXPORTER_OTLP_ENDPOINT={jaeger.otlp_endpoint}")
        click.echo(
            f"# traces: {jaeger.query_url}/api/traces?service=scribe-worker "
            f"(log: {jaeger.log_path}); Ctrl-C stops Jaeger",
            err=True,
        )
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()


if __name__ == "__main__":
    main()
