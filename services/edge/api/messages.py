"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: Anthropic's Messages API over the
event pipeline, in front of every chat alias whatever its wire format.

A body becomes one ``ChatRequested`` event (``anthropic_wire``); the answer is its
``ResultProduced`` as an Anthropic ``message`` (``anthropic_answer``), or its ``ChunkEmitted``
events as Anthropic SSE (``anthropic_stream``). Errors are Anthropic's (``anthropic_errors``).

* Keys: ``x-api-key: <key>`` (Anthropic's) or ``Authorization: Bearer <key>``; ``x-api-key``
  wins when both are sent. The route authenticates and reads the body itself (``auth=False`` in
  the route table) because the app only reads ``Authorization``; refusals still go through the
  app (audited like every edge refusal).
* ``anthropic-version`` is accepted, not required; every version is answered in the
  ``2023-06-01`` shape. ``anthropic-beta`` is ignored.
* Every answer has ``request-id`` (Anthropic's header) besides ``x-request-id``.
* Streams: before the first chunk, ``SseResponse``'s ``: keep-alive`` comments every
  ``keepalive_s`` (so a refusal still gets its HTTP status); after ``message_start``, a ``ping``
  frame every ``keepalive_s / 2`` of silence (often enough that no comment is needed).
* ``count_tokens`` checks the model with a ``models.list`` request (``not_found_error`` for an
  alias the tenant cannot use, ``invalid_request_error`` for one that does not chat) and answers
  ``{"input_tokens"}``, an ESTIMATE (UTF-8 bytes / 4, see ``anthropic_tokens``; no tokenizer: an
  alias may be served by several), marked by the header ``x-llmgw-token-count: estimate``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from services.contracts.errors import GatewayError, ModelNotFound, ValidationError
from services.contracts.events import ChunkEmitted
from services.runtime import metrics

from ..asgi import Headers, Request, Response, ms_header, read_body
from ..auth import Caller
from ..claims import claimed
from ..sse import SseResponse
from .anthropic_answer import message_json
from .anthropic_errors import REQUEST_ID, answer_error_headers, error_body, error_response
from .anthropic_errors import errors as errors  # the routes' error format
from .anthropic_stream import MessageEncoder, MessageStream, with_pings
from .anthropic_tokens import estimate_tokens
from .anthropic_wire import parse_messages
from .chat import OVERHEAD, answer_headers, build_event, stream_first_headers

if TYPE_CHECKING:
    from ..context import Edge

X_API_KEY = b"x-api-key"
#: How long ``count_tokens`` waits for the router's model list.
MODELS_TIMEOUT_S = 30.0
ESTIMATE = (b"x-llmgw-token-count", b"estimate")


def authenticate(edge: Edge, req: Request) -> Caller:
    api_key = next((v for k, v in req.scope["headers"] if k == X_API_KEY), None)
    req.caller = edge.keys.authenticate_api_key(api_key, req.authorization)
    return req.caller


async def _body(edge: Edge, req: Request) -> dict[str, Any]:
    authenticate(edge, req)
    req.body = await read_body(req, edge.settings.max_body_bytes)
    body = req.json()
    if isinstance(body.get("client_id"), str):
        req.client_id = body["client_id"]
    return body


def _first_headers(event: Any) -> Headers:
    return stream_first_headers(event) if isinstance(event, ChunkEmitted) else []


async def create_message(edge: Edge, req: Request) -> Response | SseResponse:
    call = parse_messages(await _body(edge, req))
    call.messages = await claimed(edge, req, call.messages)  # large inline media: to S3 first
    event = build_event(edge, req, call)
    rid = req.request_id
    timeout = edge.timeout_for(call.total_ms)
    if call.stream:
        s = edge.settings
        machine = MessageStream(rid, call.model, estimate_tokens(call))
        return SseResponse(
            with_pings(edge.gw.stream(event, timeout), s.keepalive_s / 2),
            MessageEncoder(machine),
            started=req.started,
            keepalive_s=s.keepalive_s,
            buffer_limit=s.stream_buffer_bytes,
            error_body=lambda err: error_body(err, rid),
            headers=[(REQUEST_ID, rid.encode())],
            more_first_headers=_first_headers,
            error_headers=answer_error_headers,
        )
    try:
        result = await req.until_disconnect(edge.gw.result(event, timeout))
    except GatewayError as err:
        return error_response(err, rid)
    overhead = (time.perf_counter() - req.started) * 1000 - (result.latency.provider_ms or 0.0)
    metrics.overhead("chat", False, max(overhead, 0.0))
    return Response(
        200,
        orjson.dumps(message_json(result, call.model)),
        [(REQUEST_ID, rid.encode()), ms_header(OVERHEAD, max(overhead, 0.0)), *answer_headers(result)],
    )


async def count_tokens(edge: Edge, req: Request) -> Response:
    call = parse_messages(await _body(edge, req), count_only=True)
    assert req.caller is not None
    rid = req.request_id
    try:
        models = await req.until_disconnect(edge.gw.models(req.caller, call.model, MODELS_TIMEOUT_S))
        if not models:
            raise ModelNotFound(
                f"model {call.model!r} does not exist or is not available to you", param="model"
            )
        if "chat" not in models[0].operations:
            raise ValidationError(f"model: {call.model} does not serve chat", param="model")
    except GatewayError as err:
        return error_response(err, rid)
    body = orjson.dumps({"input_tokens": estimate_tokens(call)})
    return Response(200, body, [(REQUEST_ID, rid.encode()), ESTIMATE])
