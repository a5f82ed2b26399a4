"""Tracing: W3C trace context travels in Kafka headers (``traceparent``), so one caller's
request is one trace across the SDK, router, executor and the provider call.

Each service sets up an OpenTelemetry ``TracerProvider`` named after it. Spans are
exported only when asked: ``LLMGW_OTEL_CONSOLE=1`` prints them (an OTLP exporter can be
added to the provider the same way); otherwise they are created for propagation only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

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


def setup(service: str) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": f"llmgw-{service}"}))
    if os.environ.get("LLMGW_OTEL_CONSOLE"):
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


class _HeaderGetter(Getter[Sequence[tuple[str, bytes]]]):
    def get(self, carrier: Sequence[tuple[str, bytes]], key: str) -> list[str] | None:
        return [v.decode("latin-1") for k, v in carrier if k == key] or None

    def keys(self, carrier: Sequence[tuple[str, bytes]]) -> list[str]:
        return [k for k, _ in carrier]


_getter = _HeaderGetter()


def inject() -> Headers:
    """The current trace context as Kafka headers (empty outside a span)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return [(k, v.encode("latin-1")) for k, v in carrier.items()]


@contextmanager
def consuming(topic: str, headers: Sequence[tuple[str, bytes]] | None) -> Iterator[None]:
    """A consumer span, child of the producer's context carried in ``headers``."""
    ctx = _propagator.extract(headers or (), getter=_getter)
    token = otel_context.attach(ctx)
    try:
        with tracer.start_as_current_span(f"{topic} process", kind=trace.SpanKind.CONSUMER):
            yield
    finally:
        otel_context.detach(token)


@contextmanager
def producing(name: str) -> Iterator[None]:
    with tracer.start_as_current_span(name, kind=trace.SpanKind.PRODUCER):
        yield
