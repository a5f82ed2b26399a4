"""The edge's span of a chat request (while tracing records, ``services/runtime/telemetry.py``):
a server span ``chat {alias}`` from the request's arrival to its answer (a stream: to its last
chunk), parent of the ``llm.requests`` publish and so of every hop after it, with the GenAI
attributes of what the caller asked and what it got (``services/runtime/genai.py``)."""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import Span, SpanKind

from services.contracts.events import ChatRequested, ChunkEmitted, ResultProduced
from services.runtime import genai, telemetry

from ..asgi import Request


def chat(req: Request, route: str, model: str, stream: bool) -> Span:
    """The span of one chat request to ``route``, started now (not yet current); a child of the
    caller's span when the request carries a W3C ``traceparent``."""
    attrs: dict[str, Any] = {
        genai.OPERATION: "chat",
        genai.REQUEST_MODEL: model,
        "http.request.method": "POST",
        "http.route": route,
        "llmgw.request.id": req.request_id,
    }
    if stream:
        attrs[genai.STREAM] = True
    carried = [(k.decode("latin-1"), v) for k, v in req.scope["headers"] if k in _W3C]
    parent = telemetry.extract(carried) if carried else None
    return telemetry.start(genai.span_name("chat", model), SpanKind.SERVER, attrs, parent)


_W3C = (b"traceparent", b"tracestate")


def requested(span: Span, event: ChatRequested) -> None:
    """Who asked (tenant and user) and, when opted in, the messages. The request's parameters
    are on the provider call's span (the edge's would repeat them)."""
    attrs: dict[str, Any] = {"llmgw.tenant.id": event.tenant_id}
    if event.user_id:
        attrs["user.id"] = event.user_id
    if telemetry.conventions.content:
        attrs[genai.INPUT_MESSAGES] = genai.input_messages(event.messages)
    span.set_attributes(attrs)


def answered(span: Span, result: ResultProduced) -> None:
    """A whole answer: response model and id, finish reason, tokens (or the error)."""
    conv = telemetry.conventions
    attrs = genai.response_attributes(
        conv,
        model=result.model,
        usage=result.usage,
        finish_reason=result.finish_reason,
        response_id=f"chatcmpl-{result.request_id}",
    )
    if result.provider:
        attrs["llmgw.provider"] = result.provider
    if conv.content and result.message is not None:
        attrs[genai.OUTPUT_MESSAGES] = genai.output_messages(result.message, result.finish_reason)
    span.set_attributes(attrs)
    if result.error is not None:
        telemetry.failed(span, result.error.code)


def chunk(span: Span, c: ChunkEmitted) -> None:
    """A stream's chunk: the first names the answering model and provider, the last its usage
    and finish reason (or its error)."""
    if c.seq == 0:
        attrs: dict[str, Any] = {genai.RESPONSE_ID: f"chatcmpl-{c.request_id}"}
        if c.model:
            attrs[genai.RESPONSE_MODEL] = c.model
        if c.provider:
            attrs["llmgw.provider"] = c.provider
        if c.ttft_ms is not None:
            attrs[genai.TIME_TO_FIRST_CHUNK] = c.ttft_ms / 1000
        span.set_attributes(attrs)
    if c.final:
        span.set_attributes(
            genai.response_attributes(
                telemetry.conventions, model=c.model, usage=c.usage, finish_reason=c.finish_reason
            )
        )
        if c.error is not None:
            telemetry.failed(span, c.error.code)
