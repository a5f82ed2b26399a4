"""``POST /v1/embeddings``: OpenAI embeddings over the event pipeline.

The body becomes one ``EmbedRequested`` event; the answer is its ``ResultProduced`` as
OpenAI's ``{"object": "list", "data": [{"object": "embedding", "index", "embedding"}],
"model", "usage": {"prompt_tokens", "total_tokens"}}``, ``embedding`` being floats, or a
base64 string (little-endian float32) with ``encoding_format: "base64"`` (the official
SDKs ask for base64 by default and decode it themselves).

Checked here (a 400 naming the field): ``model`` a non-empty string; ``input`` a non-empty
string or a non-empty list of non-empty strings. Token arrays (lists of integers) are
refused with a 400: token ids belong to one provider's tokenizer, and an alias may be
served by deployments with different ones (or by Ollama, which takes text only).
``dimensions`` a positive integer; ``encoding_format`` ``float`` or ``base64``. ``user`` and
every other field the gateway does not model reach the provider unchanged; gateway fields
``fallbacks``, ``metadata``, ``client_id``, ``total_ms`` as on chat completions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import pydantic

from services.contracts.errors import GatewayError, ValidationError
from services.contracts.events import EmbedRequested, EncodingFormat, ResultProduced
from services.runtime import metrics

from ..asgi import Request, Response, ms_header
from .chat import OVERHEAD, answer_headers, error_answer, invalid, key_of, split_gateway
from .jobs import submitted, wants_job

if TYPE_CHECKING:
    from ..context import Edge

#: Handled here, never forwarded as extra.
OWN = frozenset({"model", "input", "dimensions", "encoding_format"})


@dataclass
class EmbedCall:
    """A checked embeddings body, ready for ``Pipeline.embed_request``."""

    model: str
    input: list[str]
    dimensions: int | None = None
    encoding_format: EncodingFormat = "float"
    fields: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def _bad(param: str, message: str) -> ValidationError:
    return ValidationError(f"{param}: {message}", param=param)


def _inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        if not value:
            raise _bad("input", "must not be an empty string")
        return [value]
    if not isinstance(value, list) or not value:
        raise _bad("input", "required, a string or a non-empty list of strings")
    for i, item in enumerate(value):
        if isinstance(item, str):
            if not item:
                raise _bad(f"input[{i}]", "must not be an empty string")
            continue
        if isinstance(item, int) or (isinstance(item, list) and all(isinstance(t, int) for t in item)):
            raise _bad(
                "input", "token arrays are not supported; send the text (a string or a list of strings)"
            )
        raise _bad(f"input[{i}]", f"must be a string, got {type(item).__name__}")
    return value


def parse_embeddings(body: dict[str, Any]) -> EmbedCall:
    """Check an OpenAI embeddings body; ``ValidationError`` names the bad field."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", "required, a non-empty string")
    if "input" not in body:
        raise _bad("input", "required, a string or a non-empty list of strings")
    inputs = _inputs(body["input"])
    dimensions = body.get("dimensions")
    if dimensions is not None and (type(dimensions) is not int or dimensions <= 0):
        raise _bad("dimensions", f"must be a positive integer, got {dimensions!r}")
    asked = body.get("encoding_format")
    encoding: EncodingFormat
    if asked is None or asked == "float":
        encoding = "float"
    elif asked == "base64":
        encoding = "base64"
    else:
        raise _bad("encoding_format", f"must be 'float' or 'base64', got {asked!r}")
    fields, extra = split_gateway(body, OWN)
    return EmbedCall(model, inputs, dimensions, encoding, fields, extra)


def build_event(edge: Edge, req: Request, call: EmbedCall) -> EmbedRequested:
    assert req.caller is not None
    try:
        return edge.gw.embed_request(
            req.caller,
            call.model,
            call.input,
            dimensions=call.dimensions,
            encoding_format=call.encoding_format,
            request_id=req.request_id,
            extra=call.extra,
            **call.fields,
            **key_of(req),
        )
    except pydantic.ValidationError as exc:
        raise invalid(exc) from None


def embeddings_json(result: ResultProduced, model: str) -> dict[str, Any]:
    """A successful result as OpenAI's embeddings list (``model`` is the alias asked for)."""
    out = result.output
    data = out.data if out is not None and out.kind == "embeddings" else []
    u = result.usage
    prompt = u.prompt_tokens if u else 0
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": e.index, "embedding": e.embedding} for e in data],
        "model": result.alias or model,
        "usage": {"prompt_tokens": prompt, "total_tokens": (u.total_tokens or prompt) if u else 0},
    }


async def create_embeddings(edge: Edge, req: Request) -> Response:
    call = parse_embeddings(req.json())
    event = build_event(edge, req, call)
    if wants_job(req, event):  # async: the job's id at once, its answer on llm.jobs
        return await submitted(edge, req, event)
    timeout = edge.timeout_for(call.fields.get("total_ms"))
    try:
        result = await req.until_disconnect(edge.gw.result(event, timeout))
    except GatewayError as err:
        return error_answer(err)
    overhead = (time.perf_counter() - req.started) * 1000 - (result.latency.provider_ms or 0.0)
    metrics.overhead("embed", False, max(overhead, 0.0))
    body = orjson.dumps(embeddings_json(result, call.model))
    return Response(200, body, [ms_header(OVERHEAD, max(overhead, 0.0)), *answer_headers(result)])
