"""Recording spans at the cost a gateway hop can afford: a lean implementation of the
OpenTelemetry API's ``Span`` and of a tracer, sampler and batching exporter thread around it.

Why not the SDK's ``TracerProvider``: its spans cost about 30 us of CPU each on this machine
(attribute validation, locks, sampler objects, processor fan-out), about 200 us for the seven spans
of one chat request; with its OTLP exporter (``otlp.py``) that is more than the 5 % of a request's
CPU that tracing may take. A ``LiteSpan`` is a slotted object with a plain attribute dict, ended
into a deque; a thread sends the deque in batches. Everything else is the OpenTelemetry API:
contexts, ``use_span``, ``SpanContext``, ``Status``, ``Link``, and the SDK's ``Resource`` (so
``OTEL_RESOURCE_ATTRIBUTES`` / ``OTEL_SERVICE_NAME`` apply). A finished ``LiteSpan`` has the
attributes of the SDK's ``ReadableSpan`` that exporters read, so the SDK's own exporters and
encoder take it too (tests compare ``otlp.encode`` with the SDK's encoder on these spans).

The standard variables apply: ``OTEL_TRACES_SAMPLER`` (``parentbased_always_on`` by default,
``always_on``, ``always_off``, ``traceidratio``, ``parentbased_always_off``,
``parentbased_traceidratio``) with ``OTEL_TRACES_SAMPLER_ARG``; ``OTEL_BSP_SCHEDULE_DELAY``
(ms, 5000), ``OTEL_BSP_MAX_QUEUE_SIZE`` (2048: beyond it the oldest spans are dropped) and
``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` (512). Attribute values are taken as given (the gateway's
own, of the OpenTelemetry types); lists are kept as tuples and ``None`` is left out.
"""

from __future__ import annotations

import atexit
import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util import types

from .settings import positive_int

log = logging.getLogger(__name__)

SCOPE = InstrumentationScope("llmgw")
_UNSET = Status(StatusCode.UNSET)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_time_ns = time.time_ns
_bits = random.getrandbits


class Exporter(Protocol):
    """Where finished spans go: an OTLP exporter, a console, a test's memory (the SDK's
    ``SpanExporter`` shape: ``export`` is given a batch)."""

    def export(self, spans: Sequence[Any]) -> Any: ...

    def shutdown(self) -> None: ...


class Event:
    __slots__ = ("name", "attributes", "timestamp")
    dropped_attributes = 0

    def __init__(self, name: str, attributes: Mapping[str, Any], timestamp: int):
        self.name = name
        self.attributes = attributes
        self.timestamp = timestamp


class LiteSpan(trace.Span):
    """A recording span; once ended, what an exporter reads (``ReadableSpan``'s names)."""

    __slots__ = (
        "name",
        "kind",
        "context",
        "parent",
        "attributes",
        "events",
        "links",
        "status",
        "start_time",
        "end_time",
        "resource",
        "_ended",
        "_traceparent",
    )
    dropped_attributes = 0
    dropped_events = 0
    dropped_links = 0
    instrumentation_scope = SCOPE

    def __init__(
        self,
        ended: Callable[[LiteSpan], None],
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
        resource: Resource,
    ):
        self.name = name
        self.context = context
        self.parent = parent
        self.kind = kind
        self.attributes = attributes
        self.events: list[Event] = []
        self.links: list[Link] = []
        self.status = _UNSET
        self.resource = resource
        self.start_time = _time_ns()
        self.end_time: int | None = None
        self._ended = ended
        self._traceparent: bytes | None = None

    def traceparent(self) -> bytes | None:
        """This span's W3C ``traceparent`` header (made once: every publish inside the span
        carries it); None when the trace has a ``tracestate`` (the propagator writes both)."""
        tp = self._traceparent
        if tp is None and not self.context.trace_state:
            c = self.context
            tp = self._traceparent = b"00-%032x-%016x-%02x" % (c.trace_id, c.span_id, c.trace_flags)
        return tp

    def get_span_context(self) -> SpanContext:
        return self.context

    def is_recording(self) -> bool:
        return self.end_time is None

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        if self.end_time is None and value is not None:
            self.attributes[key] = tuple(value) if isinstance(value, list) else value

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:
        if self.end_time is not None:
            return
        for k, v in attributes.items():
            if v is not None:
                self.attributes[k] = tuple(v) if isinstance(v, list) else v

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        if self.end_time is None:
            self.events.append(Event(name, dict(attributes or {}), timestamp or _time_ns()))

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        if self.end_time is None and context.is_valid:
            self.links.append(Link(context, attributes))

    def update_name(self, name: str) -> None:
        if self.end_time is None:
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self.end_time is not None or self.status.status_code is StatusCode.OK:
            return  # OK is final (as the specification has it)
        self.status = status if isinstance(status, Status) else Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        attrs = {"exception.type": type(exception).__qualname__, "exception.message": str(exception)}
        self.add_event("exception", {**attrs, **(attributes or {})}, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self.end_time is None:
            self.end_time = end_time or _time_ns()
            self._ended(self)


Sampler = Callable[[SpanContext | None, int], bool]


def sampler_from_env(env: Mapping[str, str]) -> Sampler:
    """``OTEL_TRACES_SAMPLER`` (and its ``_ARG``) as ``sample(parent, trace_id)``."""
    name = (env.get("OTEL_TRACES_SAMPLER") or "parentbased_always_on").strip().lower()
    arg = (env.get("OTEL_TRACES_SAMPLER_ARG") or "").strip()
    try:
        ratio = min(max(float(arg), 0.0), 1.0) if arg else 1.0
    except ValueError:
        log.warning("OTEL_TRACES_SAMPLER_ARG=%r is not a number: 1.0", arg)
        ratio = 1.0
    bound = round(ratio * (1 << 64))

    def by_ratio(trace_id: int) -> bool:  # as the SDK's TraceIdRatioBased: the id's low 64 bits
        return (trace_id & 0xFFFFFFFFFFFFFFFF) < bound

    roots: dict[str, Callable[[int], bool]] = {
        "always_on": lambda _: True,
        "always_off": lambda _: False,
        "traceidratio": by_ratio,
    }
    base = name.removeprefix("parentbased_")
    root = roots.get(base)
    if root is None:
        log.warning("OTEL_TRACES_SAMPLER=%r is not known here: parentbased_always_on", name)
        root, name = roots["always_on"], "parentbased_always_on"
    if not name.startswith("parentbased_"):
        return lambda parent, trace_id: root(trace_id)
    return lambda parent, trace_id: parent.trace_flags.sampled if parent is not None else root(trace_id)


class Recorder:
    """Starts spans and delivers the ended ones: to ``immediate`` exporters as each ends (the
    console, tests), to ``batched`` (OTLP) from a thread of its own."""

    def __init__(
        self,
        resource: Resource,
        *,
        batched: Exporter | None = None,
        immediate: Sequence[Exporter] = (),
        sampler: Sampler | None = None,
        env: Mapping[str, str] | None = None,
    ):
        env = env or {}
        self.resource = resource
        self.sample = sampler or sampler_from_env(env)
        self._immediate = list(immediate)
        self._batched = batched
        self._delay_s = positive_int(env, "OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000
        self._batch = positive_int(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)
        # an exporter that encodes spans one by one (``otlp.OtlpExporter``) gets them encoded as
        # they end: the queue then holds bytes, which the GC does not track, so the spans
        # themselves die young instead of reaching the old generations the GC scans in full
        self._encode: Callable[[LiteSpan], bytes] | None = getattr(batched, "encode_span", None)
        self._queue: deque[Any] = deque(maxlen=positive_int(env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048))
        self._wake = threading.Event()
        self._stopped = False
        self._export_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.ended: Callable[[LiteSpan], None] = self._deliver if self._immediate else self._enqueue
        if batched is not None:
            self._thread = threading.Thread(target=self._run, name="llmgw-span-export", daemon=True)
            self._thread.start()
            atexit.register(self.shutdown)

    # --- starting ---------------------------------------------------------------------------

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
    ) -> trace.Span:
        """A span, child of the span in ``context`` (default: the current one). Not sampled: a
        non-recording span that still carries the trace on."""
        p = trace.get_current_span(context).get_span_context()
        attrs = {
            k: tuple(v) if isinstance(v, list) else v for k, v in (attributes or {}).items() if v is not None
        }
        return self.child(name, p if p.is_valid else None, kind, attrs)

    def child(
        self, name: str, parent: SpanContext | None, kind: SpanKind, attributes: dict[str, Any]
    ) -> trace.Span:
        """``start_span`` for the hot path: the parent's span context given (a record's producer;
        None: a new trace), ``attributes`` already clean (no lists, no None) and handed over."""
        trace_id = parent.trace_id if parent is not None else (_bits(128) or 1)
        sampled = self.sample(parent, trace_id)
        ctx = SpanContext(
            trace_id,
            _bits(64) or 1,
            False,
            _SAMPLED if sampled else _NOT_SAMPLED,
            parent.trace_state if parent is not None else None,
        )
        if not sampled:
            return NonRecordingSpan(ctx)
        return LiteSpan(self.ended, name, ctx, parent, kind, attributes, self.resource)

    @contextmanager
    def start_as_current_span(
        self, name: str, kind: SpanKind = SpanKind.INTERNAL, attributes: Mapping[str, Any] | None = None
    ) -> Iterator[trace.Span]:
        span = self.start_span(name, kind=kind, attributes=attributes)
        with trace.use_span(span, end_on_exit=True):
            yield span

    # --- delivering -------------------------------------------------------------------------

    def _deliver(self, span: LiteSpan) -> None:
        for e in self._immediate:
            try:
                e.export((span,))
            except Exception:
                log.exception("span exporter %s failed", type(e).__name__)
        if self._batched is not None:
            self._enqueue(span)

    def _enqueue(self, span: LiteSpan) -> None:
        if self._batched is None:
            return
        item: Any = span
        if self._encode is not None:
            try:
                item = self._encode(span)
            except Exception:  # a value the encoder cannot write: this span is lost, not the request
                log.exception("encoding span %r failed", span.name)
                return
        q = self._queue
        q.append(item)  # past maxlen the oldest is dropped
        if len(q) >= self._batch and not self._wake.is_set():
            self._wake.set()

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self._delay_s)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Send every span ended so far (the thread does it every ``OTEL_BSP_SCHEDULE_DELAY``)."""
        if self._batched is None:
            return
        with self._export_lock:
            q = self._queue
            while q:
                n = min(self._batch, len(q))
                batch = [q.popleft() for _ in range(n)]
                try:
                    if self._encode is not None:
                        self._batched.export_encoded(self.resource, SCOPE, batch)  # type: ignore[attr-defined]
                    else:
                        self._batched.export(batch)
                except Exception:
                    log.exception("exporting %d spans failed", n)

    def shutdown(self) -> None:
        """Stop the thread, send what is left, close the exporters (also at exit)."""
        if self._stopped:
            return
        self._stopped = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self.flush()
        for e in [*self._immediate, *([self._batched] if self._batched is not None else [])]:
            try:
                e.shutdown()
            except Exception:
                log.exception("closing span exporter %s failed", type(e).__name__)


class ConsoleExporter:
    """``LLMGW_OTEL_CONSOLE=1``: one JSON line per span on standard output."""

    def export(self, spans: Sequence[Any]) -> None:
        for s in spans:
            ctx = s.get_span_context()
            print(
                json.dumps(
                    {
                        "name": s.name,
                        "kind": s.kind.name,
                        "trace_id": f"{ctx.trace_id:032x}",
                        "span_id": f"{ctx.span_id:016x}",
                        "parent_id": f"{s.parent.span_id:016x}" if s.parent is not None else None,
                        "start_ns": s.start_time,
                        "duration_us": ((s.end_time or 0) - (s.start_time or 0)) // 1000,
                        "status": s.status.status_code.name,
                        "attributes": dict(s.attributes),
                        "service": s.resource.attributes.get("service.name"),
                    },
                    default=str,
                ),
                flush=True,
            )

    def shutdown(self) -> None:
        pass
