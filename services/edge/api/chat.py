"""``POST /v1/chat/completions``: OpenAI chat completions over the event pipeline.

The body becomes one ``ChatRequested`` event; the answer is its ``ResultProduced``
(``chat.completion``) or its ``ChunkEmitted`` events (``chat.completion.chunk`` SSE,
then, with ``stream_options.include_usage``, a ``choices: []`` usage chunk, then
``data: [DONE]``).

Request checks are cheap dict checks of what would otherwise be a bad request (a clear
400 naming the field); the contract models validate the rest. Every field the gateway
does not model reaches providers unchanged (``ChatParams.extra``). Gateway extensions
accepted in the body: ``fallbacks``, ``metadata``, ``client_id``, ``ttft_ms``, ``total_ms``.
``tenant_id`` / ``user_id`` in the body are ignored: both come from the API key.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import pydantic

from services.contracts.errors import GatewayError, ValidationError
from services.contracts.events import (
    ChatParams,
    ChatRequested,
    ChunkEmitted,
    ResultProduced,
    ToolCallDelta,
    Usage,
)
from services.runtime import metrics, telemetry

from ..asgi import Headers, Request, Response, ms_header
from ..claims import claimed
from ..errors import error_headers, openai_body, openai_error, ratelimit_headers
from ..sse import SseResponse
from . import spans
from .jobs import submitted, wants_job

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from ..context import Edge

OVERHEAD = b"x-llmgw-overhead-ms"
ErrorFormat = Callable[[GatewayError], tuple[int, bytes]]

#: OpenAI fields that are ``ChatParams`` fields of the same name.
PARAMS = frozenset(ChatParams.model_fields) - {"extra"}
#: Gateway fields accepted in the body (``ChatRequested`` fields or timeouts).
GATEWAY = frozenset({"fallbacks", "metadata", "client_id", "ttft_ms", "total_ms"})
#: Gateway fields of the other model routes (embeddings, images, audio, videos): no ``ttft_ms``.
MODEL_GATEWAY = GATEWAY - {"ttft_ms"}
#: Handled here, never forwarded.
OWN = frozenset({"model", "messages", "stream", "stream_options", "n"})
#: Ignored: identity comes from the API key only.
IGNORED = frozenset({"tenant_id", "user_id"})

_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "content_filter": "content_filter"}


@dataclass
class ChatCall:
    """A checked chat request body, ready for ``Pipeline.request``."""

    model: str
    messages: list[dict[str, Any]]
    stream: bool = False
    include_usage: bool = False
    fields: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_ms(self) -> int | None:
        return self.fields.get("total_ms")


# --- request ----------------------------------------------------------------------------


def _bad(param: str, message: str) -> ValidationError:
    return ValidationError(f"{param}: {message}", param=param)


def _positive_int(body: dict[str, Any], name: str) -> None:
    v = body.get(name)
    if v is not None and (type(v) is not int or v <= 0):
        raise _bad(name, f"must be a positive integer, got {v!r}")


def split_fields(
    body: dict[str, Any], *, skip: frozenset[str] = OWN
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(typed params and gateway fields, everything else) of a request body."""
    fields: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for k, v in body.items():
        if k in PARAMS or k in GATEWAY:
            if v is not None:
                fields[k] = v
        elif k not in skip and k not in IGNORED:
            extra[k] = v
    stop = fields.get("stop")
    if isinstance(stop, str):
        fields["stop"] = [stop]
    for name in ("ttft_ms", "total_ms", "max_completion_tokens"):
        _positive_int(body, name)
    check_gateway_fields(fields)
    return fields, extra


def split_gateway(body: dict[str, Any], own: frozenset[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(gateway fields, provider extras) of the body of a route other than chat (no sampling
    params, no ``ttft_ms``): ``MODEL_GATEWAY`` fields, ``total_ms`` checked; the rest but ``own``
    and the ignored identity fields goes to the provider."""
    fields: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for k, v in body.items():
        if k in MODEL_GATEWAY:
            if v is not None:
                fields[k] = v
        elif k not in own and k not in IGNORED:
            extra[k] = v
    total_ms = fields.get("total_ms")
    if total_ms is not None and (type(total_ms) is not int or total_ms <= 0):
        raise _bad("total_ms", f"must be a positive integer, got {total_ms!r}")
    check_gateway_fields(fields)
    return fields, extra


def check_gateway_fields(fields: dict[str, Any]) -> None:
    """The gateway extensions every model route accepts: ``fallbacks``, ``metadata``, ``client_id``."""
    fb = fields.get("fallbacks")
    if fb is not None and not (isinstance(fb, list) and all(isinstance(a, str) for a in fb)):
        raise _bad("fallbacks", "must be a list of model names")
    if "metadata" in fields and not isinstance(fields["metadata"], dict):
        raise _bad("metadata", "must be an object")
    if "client_id" in fields and not isinstance(fields["client_id"], str):
        raise _bad("client_id", "must be a string")


def check_messages(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", "required, a non-empty string")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", "required, a non-empty list of messages")
    return model, messages


def parse_chat(body: dict[str, Any]) -> ChatCall:
    """Check an OpenAI chat completions body; ``ValidationError`` names the bad field."""
    model, messages = check_messages(body)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("stream", f"must be a boolean, got {stream!r}")
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise _bad("stream_options", "must be an object")
        include_usage = options.get("include_usage") is True
    n = body.get("n")
    if n is not None and n != 1:
        raise _bad("n", f"only n=1 is supported, got {n!r}")
    fields, extra = split_fields(body)
    return ChatCall(model, messages, bool(stream), include_usage, fields, extra)


def pydantic_param(loc: tuple[int | str, ...]) -> str:
    """``("messages", 0, "role")`` -> ``messages[0].role``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def invalid(exc: pydantic.ValidationError) -> ValidationError:
    """The first problem pydantic found, as a 400 naming the field."""
    err = exc.errors()[0]
    param = pydantic_param(tuple(err["loc"])) or "body"
    more = len(exc.errors()) - 1
    return ValidationError(
        f"{param}: {err['msg']}" + (f" (and {more} more problems)" if more else ""), param=param
    )


def key_of(req: Request) -> dict[str, Any]:
    """The authenticating key's name for the event's ``api_key`` (nothing for an unnamed key)."""
    return {"api_key": req.caller.key} if req.caller is not None and req.caller.key else {}


def build_event(edge: Edge, req: Request, call: ChatCall) -> ChatRequested:
    assert req.caller is not None
    try:
        return edge.gw.request(
            req.caller,
            call.model,
            call.messages,
            stream=call.stream,
            request_id=req.request_id,
            extra=call.extra,
            **call.fields,
            **key_of(req),
        )
    except pydantic.ValidationError as exc:
        raise invalid(exc) from None


# --- answers ------------------------------------------------------------------------------


def finish_reason(raw: str | None) -> str:
    """OpenAI's finish reasons; the gateway's own (``error``, ``cancelled``) never reach a 200 answer."""
    return _FINISH.get(raw or "stop", "stop")


def completion_id(request_id: str) -> str:
    return f"chatcmpl-{request_id}"


def usage_json(u: Usage | None) -> dict[str, Any]:
    u = u or Usage()
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    }


def completion_json(result: ResultProduced, model: str, created: int) -> dict[str, Any]:
    """A successful result as OpenAI's ``chat.completion`` object."""
    msg = result.message
    message: dict[str, Any] = {"role": "assistant", "content": msg.content if msg else None, "refusal": None}
    if msg is not None and msg.tool_calls:
        message["tool_calls"] = [
            {
                "id": tc.id,
                "type": "function",
                "function": {"name": tc.function.name, "arguments": tc.function.arguments},
            }
            for tc in msg.tool_calls
        ]
    return {
        "id": completion_id(result.request_id),
        "object": "chat.completion",
        "created": created,
        "model": result.alias or model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(result.finish_reason),
            }
        ],
        "usage": usage_json(result.usage),
    }


def chunk_error(chunk: ChunkEmitted) -> GatewayError:
    """The gateway error a failed final chunk carries."""
    e = chunk.error
    assert e is not None
    return GatewayError.from_wire(
        e.code, e.message, param=e.param, details={"upstream_status": e.upstream_status, **e.details}
    )


def tool_call_delta_json(tc: ToolCallDelta) -> dict[str, Any]:
    out: dict[str, Any] = {"index": tc.index}
    fn: dict[str, Any] = {}
    if tc.id is not None:
        out["id"] = tc.id
        out["type"] = "function"
    if tc.name is not None:
        fn["name"] = tc.name
    fn["arguments"] = tc.arguments
    out["function"] = fn
    return out


class ChunkEncoder:
    """``ChunkEmitted`` events -> ``chat.completion.chunk`` SSE events (an ``SseEncoder``).

    One chunk event becomes a content chunk (when its delta has anything), and the final
    one also a ``finish_reason`` chunk and, with ``include_usage``, a ``choices: []``
    usage chunk; with ``include_usage`` every other chunk has ``usage: null`` (as OpenAI).
    A final chunk that carries an error (the answer failed after streaming, e.g. structured
    output that breaks its schema) ends the stream with an OpenAI error event instead: no
    finish chunk, no usage chunk, no ``[DONE]``.
    """

    def __init__(self, request_id: str, model: str, created: int, include_usage: bool):
        self.id = completion_id(request_id)
        self.model = model
        self.created = created
        self.include_usage = include_usage
        self.failed = False

    def _chunk(self, choices: list[dict[str, Any]], usage: Any = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.include_usage:
            out["usage"] = usage
        return out

    def objects(self, chunk: ChunkEmitted) -> list[dict[str, Any]]:
        d = chunk.delta
        delta: dict[str, Any] = {}
        if d.role:
            delta["role"] = "assistant"
            delta["content"] = d.content if d.content is not None else ("" if not d.tool_calls else None)
        elif d.content is not None:
            delta["content"] = d.content
        if d.tool_calls:
            delta["tool_calls"] = [tool_call_delta_json(tc) for tc in d.tool_calls]
        out = []
        if delta:
            out.append(self._chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]))
        if chunk.final:
            if chunk.error is not None:
                self.failed = True
                out.append(openai_body(chunk_error(chunk)))
                return out
            out.append(
                self._chunk(
                    [
                        {
                            "index": 0,
                            "delta": {},
                            "logprobs": None,
                            "finish_reason": finish_reason(chunk.finish_reason),
                        }
                    ]
                )
            )
            if self.include_usage:
                out.append(self._chunk([], usage_json(chunk.usage)))
        return out

    def encode(self, chunk: ChunkEmitted) -> bytes:
        return b"".join(b"data: " + orjson.dumps(o) + b"\n\n" for o in self.objects(chunk))

    def end(self) -> bytes:
        return b"" if self.failed else b"data: [DONE]\n\n"

    def error(self, err: GatewayError) -> bytes:
        """The error event ending the stream (nothing when a failed final chunk already sent it)."""
        if self.failed:
            return b""
        self.failed = True
        return b"data: " + orjson.dumps(openai_body(err)) + b"\n\n"

    def first_headers(self, chunk: ChunkEmitted, elapsed_ms: float) -> Headers:
        """Overhead up to the first chunk: time to first chunk minus the provider's time to
        first token (when the chunk reports it)."""
        provider_ttft = chunk.ttft_ms or 0.0
        overhead = max(elapsed_ms - provider_ttft, 0.0)
        metrics.overhead("chat", True, overhead)
        return [ms_header(OVERHEAD, overhead)]


# --- handler ------------------------------------------------------------------------------


def _error_body(err: GatewayError) -> tuple[int, bytes]:
    return openai_error(err)


FALLBACK = b"x-llmgw-fallback"


def fallback_header(result: ResultProduced) -> Headers:
    """``x-llmgw-fallback: <first planned> -> <answering>`` (alias/provider) when a deployment
    other than the first planned one answered; no header otherwise."""
    if not result.fallback_used or not result.fallback_from:
        return []
    return [(FALLBACK, f"{result.fallback_from} -> {result.alias}/{result.provider}".encode())]


def stream_fallback_header(chunk: ChunkEmitted) -> Headers:
    """The same for a stream, from its first chunk (the fallback happens before any chunk)."""
    return [(FALLBACK, chunk.fallback.encode())] if chunk.fallback else []


def stream_first_headers(chunk: ChunkEmitted) -> Headers:
    """A stream's head from its first chunk: the fallback, the rate-limit numbers."""
    return [*stream_fallback_header(chunk), *ratelimit_headers(chunk.ratelimit)]


def answer_headers(result: ResultProduced) -> Headers:
    """A whole answer's gateway headers: the fallback, the rate-limit numbers."""
    return [*fallback_header(result), *ratelimit_headers(result.ratelimit)]


def error_answer(err: GatewayError, errors: ErrorFormat = openai_error) -> Response:
    """An error that carries headers (rate limits) as the route's error answer; others are
    raised again for the app's error handling."""
    headers = error_headers(err)
    if not headers:
        raise err
    status, body = errors(err)
    return Response(status, body, headers)


async def create_chat_completion(edge: Edge, req: Request) -> Response | SseResponse:
    call = parse_chat(req.json())
    if not telemetry.recording():
        return await _complete(edge, req, call, None)
    span = spans.chat(req, "/v1/chat/completions", call.model, call.stream)
    streaming = False
    try:
        with telemetry.active(span):
            resp = await _complete(edge, req, call, span)
        streaming = isinstance(resp, SseResponse)  # the stream ends the span
        return resp
    finally:
        if not streaming:
            span.end()


async def _complete(edge: Edge, req: Request, call: ChatCall, span: Span | None) -> Response | SseResponse:
    call.messages = await claimed(edge, req, call.messages)  # large inline media: to S3 first
    event = build_event(edge, req, call)
    if span is not None:
        spans.requested(span, event)
    created = int(time.time())
    if wants_job(req, event):  # async: the job's id at once, its answer on llm.jobs
        return await submitted(edge, req, event)
    timeout = edge.timeout_for(call.total_ms)
    if call.stream:
        s = edge.settings
        events = edge.gw.stream(event, timeout)
        return SseResponse(
            telemetry.traced_stream(span, events, spans.chunk) if span is not None else events,
            ChunkEncoder(event.request_id, call.model, created, call.include_usage),
            started=req.started,
            keepalive_s=s.keepalive_s,
            buffer_limit=s.stream_buffer_bytes,
            error_body=_error_body,
            more_first_headers=stream_first_headers,
            error_headers=error_headers,
        )
    try:
        result = await req.until_disconnect(edge.gw.result(event, timeout))
    except GatewayError as err:
        if span is not None:
            telemetry.failed(span, err)
        return error_answer(err)
    overhead = max((time.perf_counter() - req.started) * 1000 - (result.latency.provider_ms or 0.0), 0.0)
    metrics.overhead("chat", False, overhead)
    if span is not None:
        spans.answered(span, result)
    body = orjson.dumps(completion_json(result, call.model, created))
    return Response(200, body, [ms_header(OVERHEAD, overhead), *answer_headers(result)])
