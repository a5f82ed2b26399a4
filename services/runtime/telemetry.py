"""Tracing: W3C trace context travels in Kafka headers (``traceparent``), so one caller's
request is one trace across the SDK, router, executor and the provider call.

Two modes, chosen once at start by ``setup``:

* recording (``LLMGW_OTEL_CONSOLE=1``; an OTLP exporter can be added to the provider the
  same way): each service records OpenTelemetry spans, consumer spans children of the
  producer's context carried in the headers;
* propagation only (the default): no spans are made (they would cost ~50 us a message and
  go nowhere); the incoming ``traceparent`` is handed on unchanged to every event the
  handler publishes, so the trace id still spans the whole pipeline.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

Headers = list[tuple[str, bytes]]
_propagator = TraceContextTextMapPropagator()
tracer = trace.get_tracer("llmgw")


_recording = False
_traceparent: ContextVar[bytes | None] = ContextVar("llmgw_traceparent", default=None)


def setup(service: str, *, console: bool = False) -> TracerProvider | None:
    """Record spans (printed when ``console``) or, by default, only propagate context."""
    global _recording
    if not console:
        _recording = False
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": f"llmgw-{service}"}))
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    _recording = True
    return provider


class _HeaderGetter(Getter[Sequence[tuple[str, bytes]]]):
    def get(self, carrier: Sequence[tuple[str, bytes]], key: str) -> list[str] | None:
        return [v.decode("latin-1") for k, v in carrier if k == key] or None

    def keys(self, carrier: Sequence[tuple[str, bytes]]) -> list[str]:
        return [k for k, _ in carrier]


_getter = _HeaderGetter()


def inject() -> Headers:
    """The current trace context as Kafka headers (empty when there is none)."""
    if not _recording and (tp := _traceparent.get()) is not None:
        return [("traceparent", tp)]
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)  # the current span: ours, or the calling application's
    return [(k, v.encode("latin-1")) for k, v in carrier.items()]


@contextmanager
def consuming(topic: str, headers: Sequence[tuple[str, bytes]] | None) -> Iterator[None]:
    """Handle a record inside the trace its ``headers`` carry."""
    if not _recording:
        token = _traceparent.set(next((v for k, v in headers or () if k == "traceparent"), None))
        try:
            yield
        finally:
            _traceparent.reset(token)
        return
    ctx = _propagator.extract(headers or (), getter=_getter)
    otel_token = otel_context.attach(ctx)
    try:
        with tracer.start_as_current_span(f"{topic} process", kind=trace.SpanKind.CONSUMER):
            yield
    finally:
        otel_context.detach(otel_token)


@contextmanager
def producing(name: str) -> Iterator[None]:
    """Publish as the start of a trace, or inside the caller's own span if it has one."""
    if _recording:
        with tracer.start_as_current_span(name, kind=trace.SpanKind.PRODUCER):
            yield
        return
    if _traceparent.get() is not None or trace.get_current_span().get_span_context().is_valid:
        yield
        return
    token = _traceparent.set(f"00-{random.getrandbits(128):032x}-{random.getrandbits(64):016x}-01".encode())
    try:
        yield
    finally:
        _traceparent.reset(token)
