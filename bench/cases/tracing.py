"""The cost of tracing: a case run again with its workers' spans exported to a real Jaeger
(`devkit/jaeger`, started for each run on loopback and stopped after it), side by side with the
same case untraced in the same group, so each run measures both under the same noise."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from bench.cases import Case, Context
from devkit.jaeger import build, default_cache, running

SERVICE = "scribe-bench"


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """`values` in os.environ for the block: what the case's worker processes inherit."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Traced(Case):
    """`inner`, with OTEL_EXPORTER_OTLP_ENDPOINT pointing its workers at Jaeger and every trace
    sampled (`always_on`): the most tracing can cost."""

    def __init__(self, inner: Case) -> None:
        self.inner = inner
        self.name = f"{inner.name}.traced"
        self.metrics = inner.metrics
        self.group = inner.group

    def unavailable(self, ctx: Context) -> str | None:
        reason = self.inner.unavailable(ctx)
        if reason:
            return reason
        if not (default_cache() / "jaeger").exists() and shutil.which("go") is None:
            return "Jaeger is not built and Go is not installed (see README, Tracing)"
        return None

    def measure(self, ctx: Context) -> dict[str, float]:
        binary = build(report=ctx.say)
        with running(binary, ctx.state_dir / f"jaeger-{self.name}") as jaeger:
            otel = {
                "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint,
                "OTEL_SERVICE_NAME": SERVICE,
                "OTEL_TRACES_SAMPLER": "always_on",
            }
            with _environment(otel):
                figures = self.inner.measure(ctx)
            if not jaeger.traces(SERVICE, limit=1):
                raise RuntimeError(f"no trace of {SERVICE} reached Jaeger: tracing was not on")
            return figures
