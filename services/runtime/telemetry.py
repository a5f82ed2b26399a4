"""Tracing: W3C trace context travels in Kafka headers (``traceparent``), so one caller's
request is one trace across the edge, router, media-store, executor, the provider call and the
sinks.

Three modes, chosen once per process at start by ``setup``:

* exporting (``OTEL_EXPORTER_OTLP_ENDPOINT``, or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` as is,
  the standard variables): each service records OpenTelemetry spans and sends them in batches
  over OTLP/HTTP (protobuf) to ``<endpoint>/v1/traces`` (``otlp.py``); consumer spans are
  children of the producer's context carried in the headers. The standard variables apply
  (``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``, ``OTEL_EXPORTER_OTLP_HEADERS``, ``_TIMEOUT``,
  ``_COMPRESSION``, ``OTEL_RESOURCE_ATTRIBUTES``);
* console (``LLMGW_OTEL_CONSOLE=1``, also with an exporter): spans printed as they end;
* propagation only (the default): no spans are made (they would cost ~50 us a message and
  go nowhere), the tracer is never called; the incoming ``traceparent`` is handed on unchanged
  to every event the handler publishes, so the trace id still spans the whole pipeline.

Spans are recorded by ``recorder.py`` (the OpenTelemetry API's ``Span``, without the SDK's
per-span costs) and exported by ``otlp.py``. While recording, spans follow the GenAI semantic conventions (``genai.py``: v1.41 names, the
newest under ``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental``, message content only
with ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``) and the messaging ones for the
Kafka hops (``{topic} process`` consumer spans; a ``{topic} publish`` producer span where a
publish has no span around it). Trace context is read and written by hand in the common case (a
lone ``traceparent``), the propagator otherwise. ``consuming`` and ``active`` are classes, not
generator context managers (a record's consumer span: about 20 us recorded and encoded, in a
synthetic loop on this machine); what a real stack pays is what ``bench.ab --interleave``
measures (README "Metrics").
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .genai import ERROR_TYPE, Conventions
from .otlp import OtlpExporter
from .recorder import ConsoleExporter, Exporter, LiteSpan, Recorder

Headers = list[tuple[str, bytes]]
T = TypeVar("T")
_propagator = TraceContextTextMapPropagator()
#: The running recorder (None: propagation only).
recorder: Recorder | None = None

_recording = False
_configured = False
_traceparent: ContextVar[bytes | None] = ContextVar("llmgw_traceparent", default=None)
#: The GenAI conventions in force (names, content), from the environment at ``setup``.
conventions = Conventions()


def traces_endpoint(env: Mapping[str, str]) -> str | None:
    """Where spans go: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` as is, else
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` + ``/v1/traces``; None: not exported."""
    if url := env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
        return url
    if url := env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        return url.rstrip("/") + "/v1/traces"
    return None


def setup(
    service: str,
    *,
    console: bool = False,
    env: Mapping[str, str] | None = None,
    instance_id: str | None = None,
    exporter: Exporter | None = None,
) -> Recorder | None:
    """Record spans (exported when ``env`` names an OTLP endpoint, printed when ``console``, handed
    to ``exporter`` as each ends: tests) or, by default, only propagate context. The recorder is
    returned (None: not recording); one set up before is shut down (its spans sent)."""
    global _recording, _configured, recorder, conventions
    env = env or {}
    _configured = True
    conventions = Conventions.from_env(env)
    endpoint = traces_endpoint(env)
    if recorder is not None:
        recorder.shutdown()
        recorder = None
    if not console and endpoint is None and exporter is None:
        _recording = False
        return None
    attrs = {"service.name": f"llmgw-{service}", "service.namespace": "llmgw"}
    if instance_id:
        attrs["service.instance.id"] = instance_id
    immediate: list[Exporter] = [ConsoleExporter()] if console else []
    if exporter is not None:
        immediate.append(exporter)
    recorder = Recorder(
        Resource.create(attrs),
        batched=OtlpExporter(endpoint, env) if endpoint is not None else None,
        immediate=immediate,
        env=env,
    )
    _recording = True
    return recorder


def configured() -> bool:
    """Whether ``setup`` ran in this process."""
    return _configured


def recording() -> bool:
    """Whether spans are recorded: callers skip building attributes when not."""
    return _recording


class _HeaderGetter(Getter[Sequence[tuple[str, bytes]]]):
    def get(self, carrier: Sequence[tuple[str, bytes]], key: str) -> list[str] | None:
        return [v.decode("latin-1") for k, v in carrier if k == key] or None

    def keys(self, carrier: Sequence[tuple[str, bytes]]) -> list[str]:
        return [k for k, _ in carrier]


_getter = _HeaderGetter()


def inject() -> Headers:
    """The current trace context as Kafka headers (empty when there is none)."""
    if not _recording:
        if (tp := _traceparent.get()) is not None:
            return [("traceparent", tp)]
    else:
        span = trace.get_current_span()
        if type(span) is LiteSpan and (own := span.traceparent()) is not None:
            return [("traceparent", own)]  # the common case: one of ours, made once per span
        ctx = span.get_span_context()
        if not ctx.is_valid:  # no span here: a record's own context (``consuming(span=False)``)
            tp = _traceparent.get()
            return [("traceparent", tp)] if tp is not None else []
        if not ctx.trace_state:  # the common case, written directly (the propagator: ~10 us)
            return [("traceparent", b"00-%032x-%016x-%02x" % (ctx.trace_id, ctx.span_id, ctx.trace_flags))]
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)  # the current span: ours, or the calling application's
    return [(k, v.encode("latin-1")) for k, v in carrier.items()]


def extract(headers: Sequence[tuple[str, bytes]] | None) -> otel_context.Context:
    """The trace context ``headers`` carry (an empty context when none). A lone ``traceparent``
    is parsed directly; with a ``tracestate`` the propagator reads both."""
    remote = _remote(headers)
    if remote is None:
        return otel_context.Context()
    if isinstance(remote, SpanContext):
        return trace.set_span_in_context(NonRecordingSpan(remote), otel_context.Context())
    return remote


def _remote(headers: Sequence[tuple[str, bytes]] | None) -> SpanContext | otel_context.Context | None:
    """The producer's span context in ``headers`` (None: none, or not valid); with a
    ``tracestate``, the context the propagator reads."""
    tp = None
    for k, v in headers or ():
        if k == "traceparent":
            tp = v
        elif k == "tracestate":
            return _propagator.extract(headers or (), getter=_getter)
    return None if tp is None else _parse(tp)


def _parse(tp: bytes) -> SpanContext | None:
    """A W3C ``traceparent`` (``00-<32 hex>-<16 hex>-<2 hex>``) as a remote span context."""
    if len(tp) < 55 or tp[2:3] != b"-" or tp[35:36] != b"-" or tp[52:53] != b"-" or tp[:2] == b"ff":
        return None
    try:
        trace_id, span_id, flags = int(tp[3:35], 16), int(tp[36:52], 16), int(tp[53:55], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))


class consuming:  # noqa: N801 - a context manager as a class: the generator kind costs ~2 us a record
    """Handle a record inside the trace its ``headers`` carry: while recording, in a
    ``{topic} process`` consumer span, child of the producer's context. ``span=False`` (and
    always when not recording): only in its context — its ``traceparent``, handed on unchanged to
    what the handler publishes, and parsed only if asked for (``current_context``: a sink's batch
    span) — for records whose span is made elsewhere or that are no hop of a request."""

    __slots__ = ("_topic", "_headers", "_partition", "_offset", "_spanned", "_token", "_otel_token", "_span")

    def __init__(
        self,
        topic: str,
        headers: Sequence[tuple[str, bytes]] | None,
        partition: int | None = None,
        offset: int | None = None,
        *,
        span: bool = True,
    ):
        self._topic = topic
        self._headers = headers
        self._partition = partition
        self._offset = offset
        self._spanned = span
        self._span: Span | None = None

    def __enter__(self) -> None:
        headers = self._headers
        if not _recording or not self._spanned:
            tp = None
            for k, v in headers or ():
                if k == "traceparent":
                    tp = v
                    break
            self._token = _traceparent.set(tp)
            return
        topic = self._topic
        known = _consumer_spans.get(topic)
        if known is None:
            known = _consumer_spans[topic] = (
                f"{topic} process",
                {
                    "messaging.system": "kafka",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": topic,
                },
            )
        name, base = known
        attrs = base.copy()
        if self._partition is not None:
            attrs["messaging.destination.partition.id"] = _partition_id(self._partition)
        if self._offset is not None:
            attrs["messaging.kafka.offset"] = self._offset
        assert recorder is not None
        remote = _remote(headers)
        if isinstance(remote, otel_context.Context):  # a tracestate too: the propagator's context
            s = recorder.start_span(name, remote, SpanKind.CONSUMER, attrs)
            ctx = remote
        else:
            s = recorder.child(name, remote, SpanKind.CONSUMER, attrs)
            ctx = _EMPTY
        self._span = s
        self._otel_token = otel_context.attach(trace.set_span_in_context(s, ctx))

    def __exit__(self, et: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        s = self._span
        if s is None:
            _traceparent.reset(self._token)
            return False
        try:
            if exc is not None:
                failed(s, exc)
        finally:
            otel_context.detach(self._otel_token)
            s.end()
        return False


#: Per topic: its consumer spans' name and constant attributes (copied for each span).
_consumer_spans: dict[str, tuple[str, dict[str, Any]]] = {}
_PARTITION_IDS = [str(i) for i in range(256)]


def _partition_id(partition: int) -> str:
    return _PARTITION_IDS[partition] if 0 <= partition < 256 else str(partition)


_EMPTY = otel_context.Context()


@contextmanager
def producing(name: str) -> Iterator[None]:
    """Publish as the start of a trace, or inside the caller's own span if it has one (while
    recording, a ``name`` producer span is made only when there is none: the edge's routes
    without a span of their own)."""
    if _recording:
        if trace.get_current_span().get_span_context().is_valid:
            yield
            return
        attrs = {"messaging.system": "kafka", "messaging.operation.type": "send"}
        assert recorder is not None
        with recorder.start_as_current_span(name, SpanKind.PRODUCER, attrs):
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


# --- spans of the services' own work (only while recording) -------------------------------

#: At most this many links on a batch's span (the OpenTelemetry SDK's default span link limit).
MAX_LINKS = 128


def current_context() -> SpanContext | None:
    """While recording, the span context current here (inside ``consuming(span=False)``: the
    record's producer's), for a batch's span to join later (``batch_span``); None otherwise."""
    if not _recording:
        return None
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        return ctx
    tp = _traceparent.get()
    return _parse(tp) if tp is not None else None


def kafka_batch(lane: tuple[str, int], count: int) -> tuple[str, dict[str, Any]]:
    """The name and attributes of the span of a batch of ``count`` records of one topic partition
    (``lane``: topic, partition), handled as one (``Batcher(traced=...)``)."""
    topic, partition = lane
    return f"{topic} process", {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": topic,
        "messaging.destination.partition.id": str(partition),
        "messaging.batch.message_count": count,
    }


def batch_span(name: str, contexts: Sequence[SpanContext], attributes: Mapping[str, Any]) -> Span:
    """The consumer span of one batch of records, handled as one (a sink's write): a child of
        the first record's producer and linked to the others' (up to ``MAX_LINKS``, as the messaging
        conventions have a batch's span; ``messaging.batch.message_count`` in ``attributes`` tells how
    many there were), so each record's trace reaches it. Only while recording."""
    assert recorder is not None, "telemetry.batch_span while not recording"
    parent = trace.set_span_in_context(NonRecordingSpan(contexts[0])) if contexts else otel_context.Context()
    span = recorder.start_span(name, parent, SpanKind.CONSUMER, attributes)
    for ctx in contexts[1 : MAX_LINKS + 1]:
        span.add_link(ctx)
    return span


def start(
    name: str, kind: SpanKind, attributes: Mapping[str, Any], context: otel_context.Context | None = None
) -> Span:
    """A span, child of the current one (or of ``context``), not made current: ``active`` makes it
    so. Only while recording."""
    assert recorder is not None, "telemetry.start while not recording"
    return recorder.start_span(name, context, kind, attributes)


class active:  # noqa: N801 - a context manager as a class (cheaper than a generator's)
    """``span`` current inside the block (nothing when None); a ``GatewayError`` raised in it
    sets ``error.type`` to its code and the span's status to error; ``end`` ends the span."""

    __slots__ = ("_span", "_end", "_token")

    def __init__(self, span: Span | None, *, end: bool = False):
        self._span = span
        self._end = end

    def __enter__(self) -> Span | None:
        span = self._span
        if span is not None:  # ``use_span``'s work, without its wrapping
            self._token = otel_context.attach(trace.set_span_in_context(span))
        return span

    def __exit__(self, et: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        span = self._span
        if span is None:
            return False
        try:
            # a stream closed early by its reader (GeneratorExit) is not a failure of the request
            if exc is not None and not isinstance(exc, GeneratorExit):
                failed(span, exc)
        finally:
            otel_context.detach(self._token)
            if self._end:
                span.end()
        return False


def failed(span: Span, exc: BaseException | str) -> None:
    """Mark ``span`` failed: ``error.type`` is a gateway error's code, else the exception's class
    (or the code given)."""
    code: str
    if isinstance(exc, str):
        code = exc
    else:  # a GatewayError, or what wraps one (the executor's ``Final``), else the class
        own = getattr(exc, "code", None) or getattr(getattr(exc, "error", None), "code", None)
        code = str(own) if own else type(exc).__qualname__
    span.set_attribute(ERROR_TYPE, code)
    span.set_status(Status(StatusCode.ERROR, None if isinstance(exc, str) else str(exc)[:300]))


async def traced_stream(
    span: Span | None, events: AsyncIterator[T], each: Callable[[Span, T], None] | None = None
) -> AsyncIterator[T]:
    """``events`` with ``span`` current while they are produced, ``each`` told every event (the
    last one's attributes: usage, finish reason), and the span ended with the stream (also when
    it is closed early or fails). The whole iteration must happen in one task (``SseResponse``'s
    pump): the context is attached at the first event and detached at the end."""
    if span is None:
        async for e in events:
            yield e
        return
    with active(span, end=True):
        try:
            async for e in events:
                if each is not None:
                    each(span, e)
                yield e
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
