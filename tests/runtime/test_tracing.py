"""W3C trace context in Kafka headers, and tracing staying off without OTEL_* variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from runtime import tracing

ROOT = Path(__file__).resolve().parents[2]
TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7


def _context_of(trace_id: int = TRACE_ID, span_id: int = SPAN_ID) -> Context:
    span = NonRecordingSpan(SpanContext(trace_id, span_id, True, TraceFlags(TraceFlags.SAMPLED)))
    return trace.set_span_in_context(span)


def test_inject_then_extract_round_trips_the_span_context() -> None:
    headers = tracing.inject([("ce_id", b"1")], context=_context_of())
    assert ("ce_id", b"1") in headers
    assert dict(headers)["traceparent"] == (
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    )
    found = tracing.span_context_of(headers)
    assert found is not None
    assert (found.trace_id, found.span_id, found.is_remote) == (TRACE_ID, SPAN_ID, True)
    assert found.trace_flags.sampled


def test_extract_reads_faust_header_dicts_too() -> None:
    headers = dict(tracing.inject(context=_context_of()))
    found = tracing.span_context_of(headers)
    assert found is not None and found.trace_id == TRACE_ID


def test_inject_replaces_a_traceparent_already_there() -> None:
    first = tracing.inject([("a", b"x")], context=_context_of(span_id=1))
    second = tracing.inject(first, context=_context_of(span_id=2))
    assert [name for name, _ in second].count("traceparent") == 1
    assert ("a", b"x") in second
    found = tracing.span_context_of(second)
    assert found is not None and found.span_id == 2


def test_no_span_no_header() -> None:
    """Outside any span (and with tracing off) the headers are left as they were."""
    assert tracing.inject([("a", b"x")]) == [("a", b"x")]
    assert tracing.inject() == []


def test_missing_or_malformed_traceparent_is_no_parent() -> None:
    assert tracing.extract(None) is None
    assert tracing.extract([]) is None
    assert tracing.extract([("other", b"1")]) is None
    assert tracing.extract([("traceparent", b"not-a-traceparent")]) is None
    assert tracing.extract([("traceparent", b"\xff\xfe")]) is None
    zeros = b"00-00000000000000000000000000000000-0000000000000000-01"
    assert tracing.extract([("traceparent", zeros)]) is None


def test_links_to_each_traced_record_up_to_the_limit() -> None:
    records = [tracing.inject(context=_context_of(span_id=n)) for n in range(1, 6)]
    records.insert(2, [("untraced", b"1")])
    links = tracing.links_to(records)
    assert [link.context.span_id for link in links] == [1, 2, 3, 4, 5]
    assert len(tracing.links_to(records, limit=3)) == 3


def test_wanted_only_with_an_endpoint() -> None:
    assert not tracing.wanted({})
    assert not tracing.wanted({"OTEL_SERVICE_NAME": "scribe", "OTEL_TRACES_SAMPLER": "always_on"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://h:4318/v1/traces"})
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert not tracing.wanted({**endpoint, "OTEL_SDK_DISABLED": "true"})
    assert not tracing.wanted({**endpoint, "OTEL_TRACES_EXPORTER": "none"})


PROBE = """
import sys
from opentelemetry import trace
from opentelemetry.context import Context
from runtime import tracing
on = tracing.configure("scribe-probe")
print(on, type(trace.get_tracer_provider()).__name__,
      "opentelemetry.exporter.otlp.proto.http" in sys.modules, tracing.enabled())
"""


def _run(script: str, extra: dict[str, str]) -> str:
    """`script`'s output, run in a fresh process with only `extra` of the OTEL_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(extra)
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def _probe(extra: dict[str, str]) -> list[str]:
    return _run(PROBE, extra).split()


def test_off_when_otel_variables_are_unset() -> None:
    """In a fresh process: no SDK provider, the exporter not even imported."""
    assert _probe({}) == ["False", "ProxyTracerProvider", "False", "False"]


def test_on_with_an_endpoint() -> None:
    """The same probe sees the SDK when an endpoint is set (so the check above can fail)."""
    # Port 9 (discard): nothing is exported during the probe, and nothing listens.
    on = _probe(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_BSP_SCHEDULE_DELAY": "60000"}
    )
    assert on == ["True", "TracerProvider", "True", "True"]


LOG_PROBE = """
import logging
from runtime import tracing
from runtime.logs import JsonFormatter
tracing.configure("scribe-probe")
outside = logging.getLogger("probe").makeRecord("probe", logging.INFO, "f", 1, "out", (), None)
with tracing.tracer().start_as_current_span("probe") as span:
    inside = logging.getLogger("probe").makeRecord("probe", logging.INFO, "f", 1, "in", (), None)
    print(format(span.get_span_context().trace_id, "032x"))
print(JsonFormatter().format(inside))
print(JsonFormatter().format(outside))
"""


def test_log_records_made_in_a_span_carry_its_trace_id() -> None:
    output = _run(
        LOG_PROBE,
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_BSP_SCHEDULE_DELAY": "60000"},
    )
    trace_id, inside, outside = output.splitlines()
    assert len(trace_id) == 32 and int(trace_id, 16) != 0
    assert json.loads(inside)["trace_id"] == trace_id
    assert "trace_id" not in json.loads(outside)


BATCH_PROBE = """
import asyncio, json
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from runtime import tracing
from runtime.flow import Flow
from runtime.source import Record
from runtime.spec import ConsumerSpec
from runtime.testing import DeadLetterList, ListConsumer, ListSink, run_flow

tracing.configure("scribe-probe")
memory = InMemorySpanExporter()
trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(memory))


def traceparent(n):
    return (("traceparent", f"00-{n:032x}-{n:016x}-01".encode()),)


# The record at offset 1 has no trace context; the others each their own trace.
records = [
    Record("numbers", 0, i, None, str(i).encode(), () if i == 1 else traceparent(i + 1))
    for i in range(3)
]
flow = Flow(
    spec=ConsumerSpec("numbers", ("numbers",), max_batch=100, stop_seconds=2),
    decode=lambda record: int(record.value),
    dead_letter=DeadLetterList(),
    handle=list,
    sinks=[ListSink()],
)
asyncio.run(run_flow(flow, ListConsumer(records)))
print(json.dumps([
    {
        "name": s.name,
        "span": s.context.span_id,
        "trace": s.context.trace_id,
        "parent": s.parent.span_id if s.parent else None,
        "links": [link.context.span_id for link in s.links],
        "count": s.attributes.get("messaging.batch.message_count"),
    }
    for s in memory.get_finished_spans()
]))
"""


def test_a_batch_span_links_to_each_record_it_consumed() -> None:
    """A flow on the runtime: its batch span links to every traced record, is a child of the
    first, and each sink's write is a child of the batch span."""
    output = _run(BATCH_PROBE, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    spans = json.loads(output.splitlines()[-1])
    (batch,) = [s for s in spans if s["name"] == "numbers batch"]
    assert batch["links"] == [1, 3]
    assert (batch["trace"], batch["parent"]) == (1, 1)
    assert batch["count"] == 3
    (write,) = [s for s in spans if s["name"] == "write ListSink"]
    assert (write["trace"], write["parent"]) == (1, batch["span"])
