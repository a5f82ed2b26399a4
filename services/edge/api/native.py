"""``POST /v1/chat``: the native endpoint of the gateway's prototype spec.

Request ``{client_id, model, messages, metadata: {request_id}}`` (plus any sampling
field of ``/v1/chat/completions``); answer ``{id, model, provider, fallback_used, usage, message}`` or
``{error: {type, message}}`` with the code's HTTP status (see ``errors.native_error``).
``metadata.request_id``, when given, is the request id (it wins over ``x-request-id``).
``fallback_used`` is true when a deployment other than the first planned one answered
(``model`` and ``provider`` then name the one that did).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from services.contracts.errors import GatewayError, ValidationError
from services.contracts.events import ResultProduced
from services.runtime import metrics

from ..asgi import Request, Response, checked_request_id, ms_header
from ..claims import claimed
from ..errors import HTTPError, native_error
from .chat import OVERHEAD, ChatCall, build_event, check_messages, error_answer, split_fields

if TYPE_CHECKING:
    from ..context import Edge

OWN = frozenset({"model", "messages", "stream"})


def parse_native(body: dict[str, Any]) -> tuple[ChatCall, str | None]:
    """(the call, ``metadata.request_id`` if given); ``ValidationError`` names the bad field."""
    model, messages = check_messages(body)
    if body.get("stream"):
        raise ValidationError(
            "stream: /v1/chat answers whole; stream with /v1/chat/completions", param="stream"
        )
    fields, extra = split_fields(body, skip=OWN)
    request_id = None
    meta = fields.get("metadata")
    if meta and meta.get("request_id") is not None:
        rid = meta["request_id"]
        if not isinstance(rid, str):
            raise ValidationError("metadata.request_id: must be a string", param="metadata.request_id")
        try:
            request_id = checked_request_id(rid.encode())
        except ValidationError as exc:
            raise ValidationError(
                exc.message.replace("x-request-id", "metadata.request_id"), param="metadata.request_id"
            ) from None
    return ChatCall(model, messages, False, False, fields, extra), request_id


def native_json(result: ResultProduced, model: str) -> dict[str, Any]:
    msg = result.message
    message: dict[str, Any] = {"role": "assistant", "content": msg.content if msg else None}
    if msg is not None and msg.tool_calls:
        message["tool_calls"] = [tc.model_dump() for tc in msg.tool_calls]
    u = result.usage
    return {
        "id": result.request_id,
        "model": result.alias or model,
        "provider": result.provider,
        "fallback_used": result.fallback_used,
        "usage": {
            "prompt_tokens": u.prompt_tokens if u else 0,
            "completion_tokens": u.completion_tokens if u else 0,
            "total_tokens": u.total_tokens if u else 0,
        },
        "message": message,
    }


def errors(err: GatewayError | HTTPError, req: Request) -> tuple[int, bytes]:
    return native_error(err, req.client_id)


async def chat(edge: Edge, req: Request) -> Response:
    body = req.json()
    if isinstance(body.get("client_id"), str):
        req.client_id = body["client_id"]
    call, request_id = parse_native(body)
    if request_id is not None:
        req.request_id = request_id
    call.messages = await claimed(edge, req, call.messages)  # large inline media: to S3 first
    event = build_event(edge, req, call)
    try:
        result = await req.until_disconnect(edge.gw.result(event, edge.timeout_for(call.total_ms)))
    except GatewayError as err:  # a rate limit answers with Retry-After
        return error_answer(err, lambda e: native_error(e, req.client_id))
    overhead = (time.perf_counter() - req.started) * 1000 - (result.latency.provider_ms or 0.0)
    metrics.overhead("chat", False, max(overhead, 0.0))
    return Response(
        200, orjson.dumps(native_json(result, call.model)), [ms_header(OVERHEAD, max(overhead, 0.0))]
    )
