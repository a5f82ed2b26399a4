"""OpenAI-compatible chat completions (``POST {base_url}/chat/completions``, base_url ends in /v1).

The gateway's own request shape is OpenAI's, so ``to_wire`` is nearly the identity: messages
pass through, set params are copied, and every ``params.extra`` key reaches the provider.
Tools (already in the unified function format, see ``services/router/tools.py``),
``tool_choice``, ``parallel_tool_calls`` and ``response_format`` (``json_schema``,
``json_object``) are OpenAI's own fields and go as they are; tool-call ids are the provider's.
Streams always ask for usage (``stream_options.include_usage``): tokens are counted by the
provider, never estimated.

Media parts the media-store resolved (``part["media"]``, see ``_media.py``) are rebuilt from
their bytes: images as ``data:`` URLs (``detail`` kept), or the caller's own https URL when
the alias lets the provider fetch it; PDF files as ``file.file_data`` ``data:`` URLs (Chat
Completions takes no other file type, so text files go as text parts, other files are
``capability_not_supported``); audio as ``input_audio`` (``wav`` / ``mp3``). Video is
``capability_not_supported``. The ``media`` key never reaches the provider; parts without
one go as they are.
"""

from __future__ import annotations

from typing import Any

from services.contracts.errors import ProviderError
from services.contracts.events import (
    AssistantMessage,
    ChatRequested,
    Message,
    ToolCall,
    ToolCallDelta,
    ToolCallFunction,
    Usage,
)

from ..targets import Target
from . import _media
from ._http import PostsJSON, bearer, headers, loads_line, sse_field
from .base import Completion, StreamDelta

#: ChatParams fields that are OpenAI fields of the same name.
PARAM_FIELDS = (
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "tools",
    "tool_choice",
    "response_format",
)

_FINISH = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def finish_reason(raw: str | None) -> str:
    """Normalise a finish reason; unknown values from compatible servers count as ``stop``."""
    return _FINISH.get(raw or "stop", "stop")


def usage_from(u: dict[str, Any]) -> Usage:
    """OpenAI usage; ``prompt_tokens_details.cached_tokens`` is part of ``prompt_tokens``."""
    prompt = u.get("prompt_tokens") or 0
    completion = u.get("completion_tokens") or 0
    details = u.get("prompt_tokens_details") or {}
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=u.get("total_tokens") or prompt + completion,
        cached_tokens=details.get("cached_tokens") or 0,
    )


def stream_error(provider: str, err: Any) -> ProviderError:
    """An error object sent inside a 200 stream (``data: {"error": {...}}``)."""
    if not isinstance(err, dict):
        return ProviderError(f"{provider}: stream error: {err}", details={"upstream_status": None})
    code = err.get("code")
    return ProviderError(
        f"{provider}: stream error: {err.get('message') or err}",
        details={
            "upstream_status": code if isinstance(code, int) else None,
            "upstream_type": err.get("type"),
        },
    )


def media_part(part: dict[str, Any], provider: str = "openai") -> dict[str, Any]:
    """One content part as Chat Completions takes it (see the module docstring)."""
    kind = _media.part_kind(part)
    if kind == "video":
        raise _media.refuse_video(provider)
    ref = _media.part_media(part) if kind is not None else None
    if ref is None:
        return part
    if kind == "image":
        detail = _media.part_body(part).get("detail")
        wire: dict[str, Any] = {"url": _media.passed_url(part) or _media.data_url(ref)}
        if detail is not None:
            wire["detail"] = detail
        return {"type": "image_url", "image_url": wire}
    if kind == "audio":
        fmt = _media.audio_format(provider, ref)
        return {"type": "input_audio", "input_audio": {"data": _media.media_data(ref), "format": fmt}}
    if ref.mime_type == _media.PDF:
        name = _media.filename(part, ref, "document.pdf")
        return {"type": "file", "file": {"filename": name, "file_data": _media.data_url(ref)}}
    if _media.is_text(ref):
        return _media.text_part(_media.filename(part, ref, "document.txt"), _media.text_of(ref))
    raise _media.refuse(provider, f"{ref.mime_type} files", " (only PDF and text files)")


def wire_messages(messages: list[Message], provider: str = "openai") -> list[dict[str, Any]]:
    """The request's messages as sent: as they are, with media parts rebuilt (:func:`media_part`)."""
    out = []
    for m in messages:
        wire = m.model_dump(exclude_none=True)
        if isinstance(m.content, list):
            wire["content"] = [media_part(p, provider) for p in wire["content"]]
        out.append(wire)
    return out


class OpenAIStreamParser:
    """Reads ``chat.completion.chunk`` SSE lines.

    The finish reason arrives one chunk before the usage chunk (``choices == []``), so it is
    held back: the final delta carries both, and is emitted when both are known, at
    ``[DONE]``, or at ``close()`` (with ``usage=None`` if the server never reported it).
    ``close()`` raises ``ProviderError`` if no finish reason was ever seen.
    """

    def __init__(self, provider: str = "openai") -> None:
        self._provider = provider
        self._model: str | None = None
        self._finish: str | None = None
        self._usage: Usage | None = None
        self._done = False

    def feed(self, line: str) -> list[StreamDelta]:
        field = sse_field(line)
        if field is None or field[0] != "data":
            return []
        if field[1] == "[DONE]":
            return self._final()
        if self._done:
            return []
        chunk = loads_line(self._provider, field[1])
        if "error" in chunk and chunk["error"] is not None:
            raise stream_error(self._provider, chunk["error"])
        if chunk.get("model"):
            self._model = chunk["model"]
        out: list[StreamDelta] = []
        choices = chunk.get("choices")
        if choices:
            choice = choices[0]
            delta = choice.get("delta") or {}
            content = delta.get("content") or None
            raw_calls = delta.get("tool_calls")
            calls = [_tool_call_delta(tc) for tc in raw_calls] if raw_calls else None
            if content or calls:
                out.append(StreamDelta(content=content, tool_calls=calls, model=self._model))
            if choice.get("finish_reason"):
                self._finish = finish_reason(choice["finish_reason"])
        if chunk.get("usage"):
            self._usage = usage_from(chunk["usage"])
        if self._finish is not None and self._usage is not None:
            out.extend(self._final())
        return out

    def close(self) -> list[StreamDelta]:
        if self._finish is None:
            raise ProviderError(
                f"{self._provider}: stream ended before finish_reason", details={"upstream_status": None}
            )
        return self._final()

    def _final(self) -> list[StreamDelta]:
        if self._done or self._finish is None:
            return []
        self._done = True
        return [StreamDelta(finish_reason=self._finish, usage=self._usage, model=self._model)]


def _tool_call_delta(tc: dict[str, Any]) -> ToolCallDelta:
    fn = tc.get("function") or {}
    return ToolCallDelta(
        index=tc.get("index", 0), id=tc.get("id"), name=fn.get("name"), arguments=fn.get("arguments") or ""
    )


class OpenAIAdapter(PostsJSON):
    """OpenAI chat completions and every server that speaks them."""

    kind = "openai"

    def to_wire(self, req: ChatRequested, deployment: Target, *, stream: bool) -> dict[str, Any]:
        """``params.extra`` keys go first so typed params (when set), ``model``, ``messages``
        and ``stream`` win over them; ``stream_options`` from extra is kept and merged."""
        params = req.params
        body: dict[str, Any] = dict(params.extra)
        for name in PARAM_FIELDS:
            value = getattr(params, name)
            if value is not None:
                body[name] = value
        body["model"] = deployment.upstream_model
        body["messages"] = wire_messages(req.messages, deployment.provider)
        if stream:
            body["stream"] = True
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        else:
            body.pop("stream", None)
            body.pop("stream_options", None)
        return body

    def from_wire(self, body: dict[str, Any], req: ChatRequested | None = None) -> Completion:
        choice = body["choices"][0]
        msg = choice["message"]
        raw_calls = msg.get("tool_calls")
        calls = (
            [
                ToolCall(
                    id=tc["id"],
                    function=ToolCallFunction(
                        name=tc["function"]["name"], arguments=tc["function"].get("arguments") or ""
                    ),
                )
                for tc in raw_calls
            ]
            if raw_calls
            else None
        )
        return Completion(
            message=AssistantMessage(content=msg.get("content"), tool_calls=calls),
            finish_reason=finish_reason(choice.get("finish_reason")),
            usage=usage_from(body.get("usage") or {}),
            model=body.get("model") or "",
        )

    def stream_parser(self, provider: str = "openai", req: ChatRequested | None = None) -> OpenAIStreamParser:
        return OpenAIStreamParser(provider)

    def endpoint(self, deployment: Target, api_key: str | None) -> tuple[str, dict[str, str]]:
        return f"{deployment.base_url.rstrip('/')}/chat/completions", headers(bearer(api_key))
