"""The OpenTelemetry GenAI semantic conventions as the gateway's spans use them: attribute names,
and the attributes of a request, an answer and (opted in) their content.

Names are those of semantic conventions v1.41 by default. ``OTEL_SEMCONV_STABILITY_OPT_IN``
containing ``gen_ai_latest_experimental`` (the standard switch) selects the newest names, those
of the GenAI conventions' own repository after v1.41; for what the gateway records they differ
only in the per-modality token counts (``gen_ai.usage.text.input_tokens``,
``gen_ai.usage.text.output_tokens``), which only the newest conventions have. (The rename of
``gen_ai.usage.cache_creation.input_tokens`` to ``gen_ai.usage.cache_write.input_tokens`` does
not show: the gateway's usage does not keep cache writes apart.)

Message content (``gen_ai.input.messages``, ``gen_ai.output.messages``, as JSON strings) is
recorded only with ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` set to ``true`` (or
``span_only`` / ``span_and_event``, the newer values of the same switch).

Everything here is pure: it builds attribute dicts from contract events, and is only called
while spans are being recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import orjson

from services.contracts.events import (
    AssistantMessage,
    ChatRequested,
    EmbedRequested,
    Message,
    RequestBase,
    Usage,
)

LATEST_OPT_IN = "gen_ai_latest_experimental"
CONTENT_SWITCH = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_CONTENT_ON = frozenset({"1", "true", "yes", "on", "span_only", "span_and_event"})

OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_ID = "gen_ai.response.id"
RESPONSE_MODEL = "gen_ai.response.model"
FINISH_REASONS = "gen_ai.response.finish_reasons"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
CACHE_READ_TOKENS = "gen_ai.usage.cache_read.input_tokens"
TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
STREAM = "gen_ai.request.stream"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
ERROR_TYPE = "error.type"
#: Only under ``gen_ai_latest_experimental``.
TEXT_INPUT_TOKENS = "gen_ai.usage.text.input_tokens"
TEXT_OUTPUT_TOKENS = "gen_ai.usage.text.output_tokens"

#: The gateway's operations as ``gen_ai.operation.name`` (others keep their own name).
OPERATIONS = {"chat": "chat", "embed": "embeddings"}
#: Provider kinds (the configuration's ``kind``) as ``gen_ai.provider.name`` well-known values.
PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini", "ollama": "ollama"}

_PARAMS = (
    ("max_tokens", "gen_ai.request.max_tokens"),
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
    ("frequency_penalty", "gen_ai.request.frequency_penalty"),
    ("presence_penalty", "gen_ai.request.presence_penalty"),
    ("seed", "gen_ai.request.seed"),
)


@dataclass(frozen=True)
class Conventions:
    """Which names (``latest``) and whether message content is recorded (``content``)."""

    latest: bool = False
    content: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Conventions:
        opt_in = {v.strip() for v in env.get("OTEL_SEMCONV_STABILITY_OPT_IN", "").split(",")}
        return cls(
            latest=LATEST_OPT_IN in opt_in,
            content=env.get(CONTENT_SWITCH, "").strip().lower() in _CONTENT_ON,
        )


def operation_name(operation: str) -> str:
    return OPERATIONS.get(operation, operation)


def span_name(operation: str, model: str) -> str:
    """``{gen_ai.operation.name} {gen_ai.request.model}``."""
    return f"{operation_name(operation)} {model}"


@lru_cache(maxsize=256)
def _server(base_url: str) -> tuple[tuple[str, str | int], ...]:
    u = urlsplit(base_url)
    if not u.hostname:
        return ()
    port = u.port or (443 if u.scheme == "https" else 80)
    return (("server.address", u.hostname), ("server.port", port))


def request_attributes(
    req: RequestBase,
    model: str,
    conv: Conventions,
    *,
    provider_kind: str | None = None,
    base_url: str | None = None,
) -> dict[str, Any]:
    """A request's attributes as sent to ``model`` (the upstream model at a provider call, the
    alias at the edge): operation, model, provider and server when known, the request's
    parameters, its ids (request, tenant, user: traces are where ids belong), and its messages
    when content is recorded."""
    attrs: dict[str, Any] = {
        OPERATION: operation_name(req.operation),
        REQUEST_MODEL: model,
        "llmgw.request.id": req.request_id,
        "llmgw.tenant.id": req.tenant_id,
    }
    if req.user_id:
        attrs["user.id"] = req.user_id
    if provider_kind is not None:
        attrs[PROVIDER] = PROVIDERS.get(provider_kind, provider_kind)
    if base_url:
        attrs.update(_server(base_url))
    if req.stream:
        attrs[STREAM] = True
    if isinstance(req, ChatRequested):
        p = req.params
        for field, name in _PARAMS:
            if (v := getattr(p, field)) is not None:
                attrs[name] = v
        if p.stop:
            attrs["gen_ai.request.stop_sequences"] = list(p.stop)
        if p.response_format and p.response_format.get("type") in ("json_object", "json_schema"):
            attrs["gen_ai.output.type"] = "json"
        if conv.content:
            attrs[INPUT_MESSAGES] = input_messages(req.messages)
    elif isinstance(req, EmbedRequested):
        attrs["gen_ai.request.encoding_formats"] = [req.encoding_format]
        if req.dimensions:
            attrs["gen_ai.embeddings.dimension.count"] = req.dimensions
    return attrs


def usage_attributes(usage: Usage | None, conv: Conventions, *, text_only: bool = False) -> dict[str, Any]:
    """Token counts; under the newest conventions also the text tokens (output of a chat answer,
    input when ``text_only``: the prompt had no media)."""
    if usage is None:
        return {}
    attrs: dict[str, Any] = {INPUT_TOKENS: usage.prompt_tokens, OUTPUT_TOKENS: usage.completion_tokens}
    if usage.cached_tokens:
        attrs[CACHE_READ_TOKENS] = usage.cached_tokens
    if conv.latest:
        attrs[TEXT_OUTPUT_TOKENS] = usage.completion_tokens
        if text_only:
            attrs[TEXT_INPUT_TOKENS] = usage.prompt_tokens
    return attrs


def response_attributes(
    conv: Conventions,
    *,
    model: str | None,
    usage: Usage | None,
    finish_reason: str | None = None,
    response_id: str | None = None,
    ttft_ms: float | None = None,
    text_only: bool = False,
) -> dict[str, Any]:
    """An answer's attributes: response model, id, finish reason, tokens, time to first chunk."""
    attrs = usage_attributes(usage, conv, text_only=text_only)
    if model:
        attrs[RESPONSE_MODEL] = model
    if response_id:
        attrs[RESPONSE_ID] = response_id
    if finish_reason:
        attrs[FINISH_REASONS] = [finish_reason]
    if ttft_ms is not None:
        attrs[TIME_TO_FIRST_CHUNK] = ttft_ms / 1000
    return attrs


def text_only(req: RequestBase) -> bool:
    """Whether a chat request's messages are text alone (no image, audio, file parts)."""
    if not isinstance(req, ChatRequested):
        return False
    return all(
        not isinstance(m.content, list) or all(p.get("type") == "text" for p in m.content)
        for m in req.messages
    )


# --- content (opt-in) ---------------------------------------------------------------------


def _parts(content: str | Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    out: list[dict[str, Any]] = []
    for p in content:
        kind = p.get("type")
        if kind == "text":
            out.append({"type": "text", "content": p.get("text", "")})
        else:  # media: its kind only, never its bytes or URL (which may be signed)
            out.append({"type": str(kind)})
    return out


def input_messages(messages: Sequence[Message]) -> str:
    """``gen_ai.input.messages``: role and parts of each message, as JSON."""
    out = []
    for m in messages:
        parts = _parts(m.content)
        if m.role == "tool":
            parts = [{"type": "tool_call_response", "id": m.tool_call_id, "response": m.content}]
        for tc in m.tool_calls or ():
            parts.append(
                {
                    "type": "tool_call",
                    "id": tc.id,
                    "name": tc.function.name,
                    "arguments": tc.function.arguments,
                }
            )
        out.append({"role": m.role, "parts": parts})
    return orjson.dumps(out).decode()


def output_messages(message: AssistantMessage | None, finish_reason: str | None) -> str:
    """``gen_ai.output.messages``: the answer's text and tool calls, as JSON."""
    parts = _parts(message.content) if message is not None else []
    for tc in (message.tool_calls if message is not None else None) or ():
        parts.append(
            {"type": "tool_call", "id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments}
        )
    return orjson.dumps(
        [{"role": "assistant", "parts": parts, "finish_reason": finish_reason or "stop"}]
    ).decode()
