"""Anthropic Messages API (``POST {base_url}/v1/messages``).

``to_wire`` translates the OpenAI-shaped request: system/developer messages become the
top-level ``system`` string, tool calls and tool results become ``tool_use`` /
``tool_result`` blocks (``tool_call_id`` is ``tool_use_id``), image parts become image blocks,
and ``max_tokens`` (required by Anthropic) defaults to ``DEFAULT_MAX_TOKENS``. Prompt tokens
reported back include cache reads and cache writes; ``cached_tokens`` is the cache reads alone.

Tools: function tools become ``{name, description, input_schema}``; ``tool_choice`` ``auto``
/ ``required`` / ``none`` / a named function become ``auto`` / ``any`` / ``none`` /
``{"type": "tool", "name"}``; ``parallel_tool_calls: false`` becomes
``disable_parallel_tool_use``. ``tool_use`` ids are kept as the tool calls' ids.

Structured output (``response_format`` ``json_schema`` / ``json_object``) goes through a
forced tool whose input is the answer (:func:`answer_tool`: named after ``json_schema.name``,
else ``json_answer``; its ``input_schema`` is the schema, whose root must be an object).
Reading the answer back, that tool's input is the message's text content (the JSON), with
finish reason ``stop``; streamed, its ``input_json_delta`` pieces are content deltas. When
the request also has tools, the answer tool is one more of them and the model must call
one (``any``, unless the caller chose otherwise).

Media parts the media-store resolved (``part["media"]``, see ``_media.py``) become blocks with
a ``base64`` source (or a ``url`` source: the caller's https URL, when the alias lets the
provider fetch it): images (jpeg, png, gif, webp) ``image`` blocks, PDF files ``document``
blocks titled with the file's name, text files ``document`` blocks with a ``text`` source.
Anthropic takes no audio or video input: those parts are ``capability_not_supported``. The
``media`` key never reaches the provider; parts without one keep the older mapping.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from services.contracts.errors import CapabilityNotSupported, ProviderError, ValidationError
from services.contracts.events import (
    AssistantMessage,
    ChatParams,
    ChatRequested,
    MediaRef,
    Message,
    ToolCall,
    ToolCallDelta,
    ToolCallFunction,
    Usage,
)

from ..targets import Target
from . import _media
from ._http import PostsJSON, headers, loads_line, sse_field, tool_arguments
from .base import Completion, StreamDelta

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
#: The forced tool of a structured-output request whose json_schema has no usable name.
ANSWER_TOOL = "json_answer"
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: The image types the Messages API reads.
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

#: Anthropic's documented error types -> the HTTP status they are sent with.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


def error_status(error_type: object) -> int | None:
    """The HTTP status Anthropic sends an error ``type`` with (None: not a documented type)."""
    return _ERROR_STATUS.get(error_type) if isinstance(error_type, str) else None


def finish_reason(raw: str | None) -> str:
    """Normalise ``stop_reason``; unknown or missing values (e.g. ``pause_turn``) count as ``stop``."""
    return _FINISH.get(raw or "end_turn", "stop")


def usage_from(u: dict[str, Any]) -> Usage:
    """Anthropic's ``input_tokens`` excludes cached tokens; prompt_tokens adds them back."""
    cache_read = u.get("cache_read_input_tokens") or 0
    prompt = (u.get("input_tokens") or 0) + cache_read + (u.get("cache_creation_input_tokens") or 0)
    completion = u.get("output_tokens") or 0
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cached_tokens=cache_read,
    )


# --- request translation -----------------------------------------------------------


def _text_of(content: str | list[dict[str, Any]] | None) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or () if p.get("type") == "text")


def _part(part: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI content part as an Anthropic block; other parts pass through unchanged."""
    kind = _media.part_kind(part)
    if kind is None:
        return part
    if kind == "video":
        raise _media.refuse_video("anthropic")
    if kind == "audio":
        raise _media.refuse("anthropic", "audio input")
    ref = _media.part_media(part)
    if ref is not None:
        return media_block(kind, part, ref)
    if part.get("type") != "image_url":
        return part
    image = part.get("image_url")
    url = image.get("url", "") if isinstance(image, dict) else str(image or "")
    if url.startswith("data:"):
        meta, _, data = url[5:].partition(",")
        media_type = meta.split(";", 1)[0] or "image/png"
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def media_block(kind: str, part: dict[str, Any], ref: MediaRef) -> dict[str, Any]:
    """A resolved image or file part as an ``image`` / ``document`` block."""
    url = _media.passed_url(part)
    if kind == "image":
        if ref.mime_type not in IMAGE_TYPES:
            raise _media.refuse("anthropic", f"{ref.mime_type} images", " (jpeg, png, gif and webp only)")
        source = (
            {"type": "url", "url": url}
            if url
            else {"type": "base64", "media_type": ref.mime_type, "data": _media.media_data(ref)}
        )
        return {"type": "image", "source": source}
    if ref.mime_type == _media.PDF:
        source = (
            {"type": "url", "url": url}
            if url
            else {"type": "base64", "media_type": _media.PDF, "data": _media.media_data(ref)}
        )
    elif _media.is_text(ref):
        source = {"type": "text", "media_type": "text/plain", "data": _media.text_of(ref)}
    else:
        raise _media.refuse("anthropic", f"{ref.mime_type} files", " (only PDF and text files)")
    block: dict[str, Any] = {"type": "document", "source": source}
    title = _media.filename(part, ref, "")
    if title:
        block["title"] = title
    return block


def _content(content: str | list[dict[str, Any]] | None) -> str | list[dict[str, Any]]:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return [_part(p) for p in content]


def _assistant(m: Message) -> dict[str, Any]:
    if not m.tool_calls:
        return {"role": "assistant", "content": _content(m.content)}
    blocks: list[dict[str, Any]] = []
    if isinstance(m.content, str):
        if m.content:
            blocks.append({"type": "text", "text": m.content})
    elif m.content:
        blocks.extend(_part(p) for p in m.content)
    blocks.extend(
        {"type": "tool_use", "id": tc.id, "name": tc.function.name, "input": tool_arguments(tc)}
        for tc in m.tool_calls
    )
    return {"role": "assistant", "content": blocks}


def _tool_result(m: Message) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id or ""}
    if m.content is not None:
        block["content"] = _content(m.content)
    return block


def to_messages(messages: list[Message]) -> tuple[str, list[dict[str, Any]]]:
    """``(system, messages)``: system/developer text joined by blank lines; consecutive tool
    results merged into one user message, as Anthropic expects."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    results: list[dict[str, Any]] | None = None  # the open user message of tool results
    for m in messages:
        if m.role in ("system", "developer"):
            system.append(_text_of(m.content))
            continue
        if m.role == "tool":
            if results is None:
                results = []
                out.append({"role": "user", "content": results})
            results.append(_tool_result(m))
            continue
        results = None
        out.append(
            _assistant(m) if m.role == "assistant" else {"role": "user", "content": _content(m.content)}
        )
    return "\n\n".join(s for s in system if s), out


def tool(t: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI function tool as an Anthropic tool; other shapes (server tools) pass through."""
    if t.get("type") != "function" or "function" not in t:
        return t
    fn = t["function"]
    out: dict[str, Any] = {
        "name": fn["name"],
        "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
    }
    if fn.get("description"):
        out["description"] = fn["description"]
    return out


def tool_choice(choice: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(choice, str):
        return {"type": {"auto": "auto", "required": "any", "none": "none"}.get(choice, choice)}
    if choice.get("type") == "function":
        return {"type": "tool", "name": choice["function"]["name"]}
    return choice


def answer_tool(req: ChatRequested) -> dict[str, Any] | None:
    """The tool that carries a structured answer (None when the request wants text)."""
    rf = req.params.response_format
    if not rf:
        return None
    kind = rf.get("type")
    if kind == "json_object":
        return {
            "name": ANSWER_TOOL,
            "description": "Give your answer as a JSON object.",
            "input_schema": {"type": "object"},
        }
    if kind != "json_schema":
        return None
    spec = rf.get("json_schema") or {}
    schema = v if isinstance(v := spec.get("schema"), dict) else {"type": "object"}
    if schema.get("type") != "object":
        raise CapabilityNotSupported(
            "anthropic structured output needs a response_format schema whose root is an object",
            param="response_format",
        )
    name = spec.get("name")
    tool: dict[str, Any] = {
        "name": name if isinstance(name, str) and _TOOL_NAME.fullmatch(name) else ANSWER_TOOL,
        "description": spec.get("description") or "Give your answer, as this tool's input.",
        "input_schema": schema,
    }
    return tool


def answer_tool_name(req: ChatRequested | None) -> str | None:
    """The name of ``req``'s answer tool, if it has one (cheap when it has no response_format)."""
    if req is None or not req.params.response_format:
        return None
    tool = answer_tool(req)
    return tool["name"] if tool else None


def _tools(params: ChatParams, parallel: Any, answer: dict[str, Any] | None) -> dict[str, Any]:
    """The body's ``tools`` and ``tool_choice``."""
    out: dict[str, Any] = {}
    tools = [tool(t) for t in params.tools or ()]
    if params.tool_choice is not None:
        out["tool_choice"] = tool_choice(params.tool_choice)
    if answer is not None:
        if any(t.get("name") == answer["name"] for t in tools):
            raise ValidationError(
                f"a tool is named {answer['name']!r}, the name of the structured-output answer", param="tools"
            )
        if not tools:  # one answer: forced, and once
            out["tool_choice"] = {"type": "tool", "name": answer["name"], "disable_parallel_tool_use": True}
        else:
            out.setdefault("tool_choice", {"type": "any"})
        tools.append(answer)
    if tools:
        out["tools"] = tools
        choice = out.get("tool_choice", {"type": "auto"})
        if parallel is False and choice.get("type") != "none":
            out["tool_choice"] = {**choice, "disable_parallel_tool_use": True}
    return out


# --- stream -----------------------------------------------------------------------


class AnthropicStreamParser:
    """Reads the Messages SSE sequence (message_start, content_block_*, message_delta,
    message_stop, ping, error). Tool-call indexes are the tool's ordinal among tool calls,
    not the content-block index. The final delta, with finish reason and usage, is emitted
    at ``message_stop``; ``close()`` before it raises ``ProviderError``. The input of the
    ``answer_tool`` (structured output) streams as content, and finishes with ``stop``."""

    def __init__(self, provider: str = "anthropic", answer_tool: str | None = None) -> None:
        self._provider = provider
        self._answer_tool = answer_tool
        self._answer_block: int | None = None  # content-block index of the answer tool's first call
        self._event: str | None = None
        self._model: str | None = None
        self._usage: dict[str, Any] = {}
        self._stop: str | None = None
        self._tools: dict[int, int] = {}  # content-block index -> tool ordinal
        self._done = False

    def feed(self, line: str) -> list[StreamDelta]:
        field = sse_field(line)
        if field is None:
            return []
        if field[0] == "event":
            self._event = field[1]
            return []
        if field[0] != "data" or self._done:
            return []
        data = loads_line(self._provider, field[1])
        kind = data.get("type") or self._event
        if kind == "content_block_delta":
            return self._block_delta(data)
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "message_start":
            message = data.get("message") or {}
            self._model = message.get("model") or self._model
            self._usage.update(message.get("usage") or {})
        elif kind == "message_delta":
            self._stop = (data.get("delta") or {}).get("stop_reason") or self._stop
            self._usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
        elif kind == "message_stop":
            self._done = True
            finish = finish_reason(self._stop)
            if self._answer_block is not None and not self._tools and finish == "tool_calls":
                finish = "stop"
            return [StreamDelta(finish_reason=finish, usage=usage_from(self._usage), model=self._model)]
        elif kind == "error":
            raise self._error(data.get("error") or {})
        return []

    def close(self) -> list[StreamDelta]:
        if not self._done:
            raise ProviderError(
                f"{self._provider}: stream ended before message_stop", details={"upstream_status": None}
            )
        return []

    def _block_start(self, data: dict[str, Any]) -> list[StreamDelta]:
        block = data.get("content_block") or {}
        if (
            block.get("type") == "tool_use"
            and self._answer_tool is not None
            and block.get("name") == self._answer_tool
        ):
            if self._answer_block is None:  # the first answer is the answer; a repeat is dropped
                self._answer_block = data.get("index", 0)
            return []
        if block.get("type") == "tool_use":
            ordinal = self._tools[data.get("index", 0)] = len(self._tools)
            call = ToolCallDelta(index=ordinal, id=block.get("id"), name=block.get("name"))
            return [StreamDelta(tool_calls=[call], model=self._model)]
        if block.get("type") == "text" and block.get("text"):
            return [StreamDelta(content=block["text"], model=self._model)]
        return []

    def _block_delta(self, data: dict[str, Any]) -> list[StreamDelta]:
        delta = data.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [StreamDelta(content=delta["text"], model=self._model)]
        if kind == "input_json_delta" and delta.get("partial_json"):
            if self._answer_block is not None and data.get("index", 0) == self._answer_block:
                return [StreamDelta(content=delta["partial_json"], model=self._model)]
            ordinal = self._tools.get(data.get("index", 0))
            if ordinal is not None:
                call = ToolCallDelta(index=ordinal, arguments=delta["partial_json"])
                return [StreamDelta(tool_calls=[call], model=self._model)]
        return []  # thinking / signature deltas are not part of the normalised answer

    def _error(self, err: dict[str, Any]) -> ProviderError:
        kind = err.get("type")
        return ProviderError(
            f"{self._provider}: stream error: {err.get('message') or kind or 'unknown error'}",
            details={"upstream_status": _ERROR_STATUS.get(kind or ""), "upstream_type": kind},
        )


# --- adapter ----------------------------------------------------------------------


class AnthropicAdapter(PostsJSON):
    """Anthropic's Messages API, with the OpenAI-shaped request translated."""

    kind = "anthropic"

    def to_wire(self, req: ChatRequested, deployment: Target, *, stream: bool) -> dict[str, Any]:
        """``params.extra`` keys go first so typed params (when set), ``model``, ``messages``,
        ``system`` and ``stream`` win. OpenAI's ``parallel_tool_calls: false`` becomes
        ``tool_choice.disable_parallel_tool_use``; ``response_format`` becomes the forced
        answer tool; seed and penalties have no Anthropic equivalent and are dropped."""
        params = req.params
        body: dict[str, Any] = dict(params.extra)
        parallel = body.pop("parallel_tool_calls", None)
        system, messages = to_messages(req.messages)
        body["max_tokens"] = params.max_tokens or body.get("max_tokens") or DEFAULT_MAX_TOKENS
        if params.temperature is not None:
            body["temperature"] = params.temperature
        if params.top_p is not None:
            body["top_p"] = params.top_p
        if params.stop:
            body["stop_sequences"] = params.stop
        answer = answer_tool(req) if params.response_format else None
        if params.tools or params.tool_choice is not None or answer is not None:
            body.update(_tools(params, parallel, answer))
        body["model"] = deployment.upstream_model
        body["messages"] = messages
        if system:
            body["system"] = system
        body.pop("stream", None)
        if stream:
            body["stream"] = True
        return body

    def from_wire(self, body: dict[str, Any], req: ChatRequested | None = None) -> Completion:
        """With ``req``'s answer tool (structured output), that tool's input is the text answer."""
        answer_name = answer_tool_name(req)
        texts: list[str] = []
        answer: str | None = None
        calls: list[ToolCall] = []
        for block in body["content"]:
            if block.get("type") == "text":
                texts.append(block["text"])
            elif block.get("type") == "tool_use":
                arguments = orjson.dumps(block.get("input") or {}).decode()
                if answer_name is not None and block["name"] == answer_name:
                    answer = arguments if answer is None else answer  # the first answer counts
                    continue
                calls.append(
                    ToolCall(
                        id=block["id"], function=ToolCallFunction(name=block["name"], arguments=arguments)
                    )
                )
        finish = finish_reason(body.get("stop_reason"))
        if answer is not None and not calls and finish == "tool_calls":
            finish = "stop"
        content = answer if answer is not None else ("".join(texts) if texts else None)
        return Completion(
            message=AssistantMessage(content=content, tool_calls=calls or None),
            finish_reason=finish,
            usage=usage_from(body.get("usage") or {}),
            model=body.get("model") or "",
        )

    def stream_parser(
        self, provider: str = "anthropic", req: ChatRequested | None = None
    ) -> AnthropicStreamParser:
        return AnthropicStreamParser(provider, answer_tool_name(req))

    def endpoint(self, deployment: Target, api_key: str | None) -> tuple[str, dict[str, str]]:
        auth = {"x-api-key": api_key} if api_key else {}
        url = f"{deployment.base_url.rstrip('/')}/v1/messages"
        return url, headers({**auth, "anthropic-version": API_VERSION})
