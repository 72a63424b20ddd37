"""Tracing with OpenTelemetry, configured by the standard `OTEL_*` variables and off when they
are unset: then no tracer provider or exporter is started and every span is the API's no-op.

`configure` starts the SDK with the OTLP/HTTP exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the SDK itself reads the rest (`OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*`, the exporter's headers,
timeout and TLS files). `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` keep it off.

A trace crosses Kafka as a W3C `traceparent` header (and `tracestate` when there is one) in the
record's headers, the `(str, bytes)` pairs aiokafka reads and writes: `inject` writes the
current span's, `extract` reads a record's back into a parent context, `link_to` turns it into
a link for a span that handles a batch of records.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    StatusCode,
    Tracer,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

log = logging.getLogger(__name__)

TRACER_NAME = "scribe"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_TRACE_HEADERS = frozenset({TRACEPARENT, TRACESTATE})
# A batch span links to at most this many records (the OTel SDK's default span link limit).
MAX_LINKS = 128

Header = tuple[str, bytes]
# What a consumed record's headers may look like: aiokafka's pairs, or Faust's dict of them
# (or an HTTP request's headers, whose values are str).
RecordHeaders = Sequence[tuple[str, bytes]] | Mapping[str, bytes] | Mapping[str, str] | None

_PROPAGATOR = TraceContextTextMapPropagator()


class _Started:
    provider: Any = None  # the SDK's TracerProvider once `configure` started one


_started = _Started()


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint is set and neither
    `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` turns them off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    )


def configure(default_service: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Start the tracer provider and its OTLP exporter if `wanted`; True when tracing is on.
    `default_service` names the service when `OTEL_SERVICE_NAME` does not. Called once per
    process, before the spans it should record; a second call changes nothing."""
    if _started.provider is not None:
        return True
    if not wanted(environ):
        return False
    # Imported here: a process with tracing off never loads the SDK or the exporter.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    service = environ.get("OTEL_SERVICE_NAME", "").strip() or default_service
    # Resource.create reads OTEL_RESOURCE_ATTRIBUTES; the sampler comes from OTEL_TRACES_SAMPLER.
    # Not the SDK's own exit hook: its shutdown may wait 30 s for a collector that is down.
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: service}), shutdown_on_exit=False
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _started.provider = provider
    atexit.register(shutdown)
    _trace_ids_in_logs()
    log.info("tracing: spans of %s exported over OTLP/HTTP", service)
    return True


def enabled() -> bool:
    return _started.provider is not None


def shutdown(timeout_s: float = 2.0) -> None:
    """Export what is buffered and stop the exporter (at the end of the process), each within
    `timeout_s`: a collector that is down must not hold up a stopping worker."""
    provider, _started.provider = _started.provider, None
    if provider is None:
        return
    provider.force_flush(int(timeout_s * 1000))
    # The SDK's shutdown waits for its export thread, which a dead collector keeps busy.
    stopping = threading.Thread(target=provider.shutdown, name="tracing-shutdown", daemon=True)
    stopping.start()
    stopping.join(timeout_s)


# A proxy until `configure` sets the provider, then the SDK's tracer: one for the process.
_TRACER = trace.get_tracer(TRACER_NAME)


def tracer() -> Tracer:
    return _TRACER


def _trace_ids_in_logs() -> None:
    """Each log record made inside a span carries its trace id (`trace_id`, which the JSON log
    format prints)."""
    make_record = logging.getLogRecordFactory()

    def with_trace_id(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = context.trace_id
        return record

    logging.setLogRecordFactory(with_trace_id)


# -- W3C trace context in Kafka headers ------------------------------------------------------


def inject(headers: Iterable[Header] = (), context: Context | None = None) -> list[Header]:
    """`headers` with the `traceparent` (and `tracestate`) of the current span, or of the span
    in `context`, replacing any there were; unchanged (as a list) when there is no valid span."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=context)
    kept = [h for h in headers if h[0] not in _TRACE_HEADERS] if carrier else list(headers)
    return kept + [(name, value.encode("ascii")) for name, value in carrier.items()]


def extract(headers: RecordHeaders) -> Context | None:
    """The parent context a record's `traceparent` names, or None when it has none (or a
    malformed one)."""
    carrier = _carrier(headers)
    if TRACEPARENT not in carrier:
        return None
    context = _PROPAGATOR.extract(carrier)
    if not trace.get_current_span(context).get_span_context().is_valid:
        return None
    return context


def span_context_of(headers: RecordHeaders) -> SpanContext | None:
    context = extract(headers)
    if context is None:
        return None
    return trace.get_current_span(context).get_span_context()


def links_to(records_headers: Iterable[RecordHeaders], limit: int = MAX_LINKS) -> list[Link]:
    """A link to each record's span context (the first `limit` that have one), for the span
    of a batch that consumed them."""
    links: list[Link] = []
    for headers in records_headers:
        if len(links) >= limit:
            break
        found = span_context_of(headers)
        if found is not None:
            links.append(Link(found))
    return links


def _carrier(headers: RecordHeaders) -> dict[str, str]:
    if not headers:
        return {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    carrier = {}
    for raw_name, value in pairs:
        name = raw_name.lower()  # HTTP header names are case-insensitive
        if name in _TRACE_HEADERS and value is not None:
            try:
                carrier[name] = value.decode("ascii") if isinstance(value, bytes) else str(value)
            except UnicodeDecodeError:
                continue  # not a W3C value: ignored, the record is processed untraced
    return carrier


@contextmanager
def consuming(
    name: str, headers: RecordHeaders, attributes: Mapping[str, AttributeValue] | None = None
) -> Iterator[Span]:
    """The current span while one consumed record is handled: a child of the span that
    produced it (its `traceparent`), or a new trace's root when it has none."""
    parent = extract(headers) if enabled() else None
    with tracer().start_as_current_span(
        name, context=parent or Context(), kind=SpanKind.CONSUMER, attributes=attributes
    ) as span:
        yield span


def handed_on(
    name: str, headers: RecordHeaders, attributes: Mapping[str, AttributeValue] | None = None
) -> tuple[Header, ...]:
    """For a record a stage passes on to another topic as it is: a span for the stage, a child
    of the record's, and the headers that carry it on; nothing (no span) when tracing is off."""
    if not enabled():
        return ()
    with consuming(name, headers, attributes):
        return tuple(inject())


@contextmanager
def consuming_batch(
    name: str,
    records_headers: Iterable[RecordHeaders],
    attributes: Mapping[str, AttributeValue] | None = None,
) -> Iterator[Span]:
    """The current span while a batch of records is handled. It links to each record's span
    (up to `MAX_LINKS`) and is a child of the first, so the trace of that record shows the
    batch that carried it; the others reach it through their link."""
    links = links_to(records_headers) if enabled() else []
    parent = trace.set_span_in_context(NonRecordingSpan(links[0].context)) if links else Context()
    with tracer().start_as_current_span(
        name, context=parent, kind=SpanKind.CONSUMER, links=links, attributes=attributes
    ) as span:
        yield span


@contextmanager
def serving(
    name: str, headers: RecordHeaders, attributes: Mapping[str, AttributeValue] | None = None
) -> Iterator[Span]:
    """The current span while an HTTP request is served: a child of the caller's span when the
    request has a `traceparent`, else a new trace's root."""
    parent = extract(headers) if enabled() else None
    with tracer().start_as_current_span(
        name, context=parent or Context(), kind=SpanKind.SERVER, attributes=attributes
    ) as span:
        yield span


def answered(span: Span, status: int) -> None:
    """The HTTP status on a server span; a 5xx marks it failed (a 4xx is the client's)."""
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(StatusCode.ERROR)
