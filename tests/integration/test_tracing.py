"""One AI request through the gateway, traced into a real Jaeger: the gateway, every router
stage, the provider call and the usage write are one trace, found through Jaeger's query API.

Marked `engine` as well: the first build of Jaeger from the Go module proxy takes minutes on
cold Go caches, so `make test-engine` builds it before the tests start (`python -m devkit.jaeger
--build-only`) and this test's set-up finds it built. The pipeline
runs on a stack of its own, so its new consumer groups read only this test's request."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devkit.harness import WorkerProcess, gateway_process, new_worker
from devkit.jaeger import RunningJaeger, build, running
from devkit.stack import LocalStack
from schemas import encode
from schemas.events import AIRequest
from schemas.examples import example

pytestmark = [pytest.mark.integration, pytest.mark.engine]

LANES = ("held", "urgent", "normal", "deferred")
# The client's own span: the gateway continues its trace.
CLIENT_TRACE_ID = uuid.uuid4().hex
CLIENT_SPAN_ID = uuid.uuid4().hex[:16]


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningJaeger]:
    binary = build(report=print)
    with running(binary, tmp_path_factory.mktemp("jaeger")) as found:
        yield found


@pytest.fixture(scope="module")
def own_stack(state_dir: Path) -> Iterator[dict[str, str]]:
    with LocalStack(state_dir / "tracing-stack").running() as env:
        yield env


def otel(jaeger: RunningJaeger, service: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint,
        "OTEL_SERVICE_NAME": service,
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }


def wait_for_lanes(worker: WorkerProcess, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    wanted = [f"router-{lane}: assigned partitions" for lane in LANES]
    while time.monotonic() < deadline:
        log = worker.log_path.read_text(errors="replace")
        if all(line in log for line in [*wanted, "router-decide: assigned partitions"]):
            return
        time.sleep(0.2)
    raise TimeoutError(f"router lanes not assigned:\n{worker.log_tail()}")


def tags(span: dict[str, Any]) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in span.get("tags", [])}


def parent_of(span: dict[str, Any]) -> str | None:
    """The span's parent as Jaeger shows it: its CHILD_OF reference, else its first one (a
    batch span's parent is also one of its links, and Jaeger then keeps only the link, a
    FOLLOWS_FROM reference)."""
    references = [r for r in span.get("references", []) if r["traceID"] == span["traceID"]]
    for reference in references:
        if reference["refType"] == "CHILD_OF":
            return str(reference["spanID"])
    return str(references[0]["spanID"]) if references else None


def our_trace(jaeger: RunningJaeger, request_id: str) -> dict[str, Any] | None:
    """The trace with the client's id once it holds the gateway's span and the usage write;
    every span tagged with the request id must be in it."""
    traces = jaeger.traces("scribe-worker") + jaeger.traces("scribe-gateway")
    found = [t for t in traces if t["traceID"] == CLIENT_TRACE_ID]
    elsewhere = [
        t["traceID"]
        for t in traces
        if t["traceID"] != CLIENT_TRACE_ID
        and any(tags(s).get("scribe.request_id") == request_id for s in t["spans"])
    ]
    assert not elsewhere, f"spans of {request_id} in other traces: {elsewhere}"
    if not found:
        return None
    # The query merges the trace's spans from every service; take the fullest answer.
    trace = max(found, key=lambda t: len(t["spans"]))
    names = {s["operationName"] for s in trace["spans"]}
    # The gateway's process exports its span on its own schedule: wait for both ends.
    return trace if {"usage.ledger.write", "POST /v1/events/{topic}"} <= names else None


def test_one_request_is_one_trace_from_the_gateway_to_the_usage_write(
    jaeger: RunningJaeger, own_stack: dict[str, str], tmp_path: Path
) -> None:
    token = f"trace-{uuid.uuid4().hex}"
    worker = new_worker(own_stack | otel(jaeger, "scribe-worker"), tmp_path / "workers")
    gateway_env = own_stack | otel(jaeger, "scribe-gateway")
    gateway_env["SCRIBE_GATEWAY_TOKENS"] = f"tracing:{token}:ai.requests"
    request = example(AIRequest, user_id=f"user-{uuid.uuid4().hex[:8]}")
    worker.start()
    try:
        wait_for_lanes(worker)
        with gateway_process(gateway_env, tmp_path / "gateway.log") as url:
            answer = httpx.post(
                f"{url}/v1/events/ai.requests",
                content=encode(request),
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/json",
                    "traceparent": f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01",
                },
                timeout=30,
            )
            assert answer.status_code == 202, answer.text
            deadline = time.monotonic() + 90
            trace = our_trace(jaeger, request.request_id)
            while trace is None:
                assert time.monotonic() < deadline, (
                    f"no complete trace in Jaeger; services {jaeger.services()}:\n"
                    f"{worker.log_tail()}"
                )
                time.sleep(0.5)
                trace = our_trace(jaeger, request.request_id)
    finally:
        worker.stop()
    check_trace(trace, request.request_id)


def check_trace(trace: dict[str, Any], request_id: str) -> None:
    spans = {s["spanID"]: s for s in trace["spans"]}
    processes = {key: p["serviceName"] for key, p in trace["processes"].items()}
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans.values():
        by_name.setdefault(span["operationName"], []).append(span)
    names = sorted(by_name)

    (gateway,) = by_name["POST /v1/events/{topic}"]
    assert processes[gateway["processID"]] == "scribe-gateway"
    assert parent_of(gateway) == CLIENT_SPAN_ID  # the caller's traceparent was continued
    assert tags(gateway)["http.response.status_code"] == 202
    for stage in ("router.decide", "router.execute"):
        assert stage in by_name, names
        (span,) = by_name[stage]
        assert processes[span["processID"]] == "scribe-worker"
        assert tags(span)["scribe.request_id"] == request_id
    provider = [s for s in spans.values() if "gen_ai.request.model" in tags(s)]
    assert len(provider) == 1, names
    attributes = tags(provider[0])
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert attributes["gen_ai.usage.output_tokens"] > 0
    assert attributes["gen_ai.system"] in ("openrouter", "gemini")
    assert provider[0]["operationName"] == (
        f"{attributes['gen_ai.operation.name']} {attributes['gen_ai.request.model']}"
    )
    (ledger,) = by_name["usage.ledger.write"]
    assert tags(ledger)["db.system.name"] == "postgresql"
    (usage_batch,) = by_name["usage batch"]
    assert usage_batch["references"], "the batch links to the records it consumed"

    def chain(span: dict[str, Any]) -> list[str]:
        names = [span["operationName"]]
        while (parent := parent_of(span)) in spans:
            span = spans[parent]
            names.append(span["operationName"])
        return names

    # Each hop is a child of the one before: the provider call under execute, under decide
    # (which read the request from ai.requests), under the gateway; the usage write under the
    # batch that consumed the usage event execute published.
    assert chain(provider[0]) == [
        provider[0]["operationName"],
        "router.execute",
        "router.decide",
        "POST /v1/events/{topic}",
    ]
    assert chain(ledger)[:4] == [
        "usage.ledger.write",
        "write LedgerSink",
        "usage batch",
        "router.execute",
    ]
