"""``POST /v1/images/generations``: OpenAI image generation over the event pipeline.

The body becomes one ``ImageGenerateRequested``; its ``ResultProduced`` (``ImagesOutput``, each
image a ``MediaRef`` the media-store stored and presigned) becomes OpenAI's ``{"created", "data":
[{"url"} | {"b64_json"}, "revised_prompt"?], "usage"?}``. ``response_format: "url"`` (the
default) answers each image's presigned URL; ``"b64_json"`` its bytes in base64, from the
result when it carries them inline, else read from FileStorage by the image's key (the claim
check). ``output_format``, ``size`` and ``quality`` are echoed when they are values OpenAI
documents for the answer.

Checked here (a 400 naming the field): ``prompt`` a non-empty string, ``model`` a non-empty
string, ``n`` an integer from 1 to 10, ``response_format`` ``url`` or ``b64_json``,
``output_format`` ``png``/``jpeg``/``webp``; ``stream`` (partial images) is not supported.
Every other OpenAI field (``user``, ``background``, ``style``, ``moderation``,
``output_compression``, ...) reaches the provider unchanged (``extra``); gateway fields
``fallbacks``, ``metadata``, ``client_id``, ``total_ms`` as on chat completions.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import pydantic

from services.contracts.errors import GatewayError, ValidationError
from services.contracts.events import GeneratedImage, ImageGenerateRequested, ResultProduced
from services.runtime import metrics

from ..asgi import Request, Response, ms_header
from .chat import OVERHEAD, answer_headers, error_answer, invalid, key_of, split_gateway
from .files import media_bytes
from .jobs import submitted, wants_job

if TYPE_CHECKING:
    from ..context import Edge

OWN = frozenset({"model", "prompt", "n", "size", "quality", "response_format", "output_format", "stream"})
#: Values the answer's ``output_format`` / ``size`` / ``quality`` may have (OpenAI's ``ImagesResponse``).
ANSWER_ENUMS = {
    "output_format": frozenset({"png", "webp", "jpeg"}),
    "size": frozenset({"1024x1024", "1024x1536", "1536x1024"}),
    "quality": frozenset({"low", "medium", "high"}),
}


@dataclass
class ImageCall:
    """A checked images body, ready for ``Pipeline.image_request``."""

    model: str
    prompt: str
    params: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def b64(self) -> bool:
        return self.params.get("response_format") == "b64_json"


def _bad(param: str, message: str) -> ValidationError:
    return ValidationError(f"{param}: {message}", param=param)


def required_text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise _bad(name, "required, a non-empty string")
    return value


def parse_images(body: dict[str, Any]) -> ImageCall:
    """Check an OpenAI image generation body; ``ValidationError`` names the bad field."""
    prompt = required_text(body, "prompt")
    model = required_text(body, "model")
    if body.get("stream"):
        raise _bad("stream", "streamed image generation (partial images) is not supported")
    params: dict[str, Any] = {}
    n = body.get("n")
    if n is not None:
        if type(n) is not int or not 1 <= n <= 10:
            raise _bad("n", f"must be an integer from 1 to 10, got {n!r}")
        params["n"] = n
    fmt = body.get("response_format")
    if fmt is not None:
        if fmt not in ("url", "b64_json"):
            raise _bad("response_format", f"must be 'url' or 'b64_json', got {fmt!r}")
        params["response_format"] = fmt
    out = body.get("output_format")
    if out is not None:
        if out not in ("png", "jpeg", "webp"):
            raise _bad("output_format", f"must be 'png', 'jpeg' or 'webp', got {out!r}")
        params["output_format"] = out
    for name in ("size", "quality"):
        if (value := body.get(name)) is not None:
            if not isinstance(value, str):
                raise _bad(name, f"must be a string, got {value!r}")
            params[name] = value
    fields, extra = split_gateway(body, OWN)
    return ImageCall(model, prompt, params, fields, extra)


def build_event(edge: Edge, req: Request, call: ImageCall) -> ImageGenerateRequested:
    assert req.caller is not None
    try:
        return edge.gw.image_request(
            req.caller,
            call.model,
            call.prompt,
            request_id=req.request_id,
            extra=call.extra,
            **call.params,
            **call.fields,
            **key_of(req),
        )
    except pydantic.ValidationError as exc:
        raise invalid(exc) from None


async def image_json(edge: Edge, image: GeneratedImage, b64: bool) -> dict[str, Any]:
    ref = image.media
    out: dict[str, Any]
    if b64:
        data = ref.data if ref.data is not None else base64.b64encode(await media_bytes(edge, ref)).decode()
        out = {"b64_json": data}
    elif ref.url:
        out = {"url": ref.url}
    elif ref.key:
        out = {"url": await edge.files.presign(ref.key, edge.config.media.url_expiry_s)}
    else:  # (a result nothing stored: the bytes are all there is)
        out = {"url": f"data:{ref.mime_type};base64,{ref.data or ''}"}
    if image.revised_prompt is not None:
        out["revised_prompt"] = image.revised_prompt
    return out


async def images_json(edge: Edge, result: ResultProduced, b64: bool) -> dict[str, Any]:
    """A successful result as OpenAI's ``ImagesResponse``."""
    out = result.output
    if out is None or out.kind != "images":
        raise GatewayError("the image generation answer carries no images")
    body: dict[str, Any] = {
        "created": out.created,
        "data": [await image_json(edge, image, b64) for image in out.data],
    }
    for name, allowed in ANSWER_ENUMS.items():
        if (value := getattr(out, name)) in allowed:
            body[name] = value
    u = result.usage
    if u is not None and u.total_tokens:
        body["usage"] = {
            "input_tokens": u.prompt_tokens,
            "output_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens,
            "input_tokens_details": {"text_tokens": u.prompt_tokens, "image_tokens": 0},
        }
    return body


async def create_image(edge: Edge, req: Request) -> Response:
    call = parse_images(req.json())
    event = build_event(edge, req, call)
    if wants_job(req, event):  # async: the job's id at once, its answer on llm.jobs
        return await submitted(edge, req, event)
    timeout = edge.timeout_for(call.fields.get("total_ms"))
    try:
        result = await req.until_disconnect(edge.gw.result(event, timeout))
    except GatewayError as err:
        return error_answer(err)
    overhead = (time.perf_counter() - req.started) * 1000 - (result.latency.provider_ms or 0.0)
    metrics.overhead("image.generate", False, max(overhead, 0.0))
    body = orjson.dumps(await images_json(edge, result, call.b64))
    return Response(200, body, [ms_header(OVERHEAD, max(overhead, 0.0)), *answer_headers(result)])
