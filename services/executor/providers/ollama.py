"""Ollama's native chat API (``POST {base_url}/api/chat``), streamed as NDJSON.

``stream`` is always set explicitly because Ollama streams by default. Sampling params go in
``options`` (``max_tokens`` is ``num_predict``); ``params.extra`` keys go at the top level,
except ``extra["options"]``, which is merged into ``options``.

Tools go in the function format (``strict`` dropped). Ollama has no ``tool_choice``:
``none`` sends no tools, a named function sends that tool alone, ``auto`` and ``required``
send them all (Ollama cannot be made to call one); ``parallel_tool_calls`` has no
equivalent and is dropped. Ollama has no tool-call ids either: a missing one is derived
from the call's index, name and arguments (:func:`call_id`), so the streamed and the whole
answer name a call alike. A tool result's ``tool_name`` is its message's ``name`` or the
name of the call its ``tool_call_id`` answers. ``response_format`` becomes ``format``.

Media: a message's images go in its ``images`` list (base64; resolved parts from the
media-store's bytes, so a caller's https image works too), its text parts joined as
``content``; a resolved text file joins the content as text, set apart by blank lines.
Ollama takes no PDF, other file, audio or video input: those parts are
``capability_not_supported`` (an alias with ``documents: extract`` sends a PDF's text instead).
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from services.contracts.errors import CapabilityNotSupported, ProviderError
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
from ._http import PostsJSON, bearer, headers, loads_line, tool_arguments
from .base import Completion, StreamDelta

#: ChatParams field -> Ollama option.
OPTION_FIELDS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "stop": "stop",
    "max_tokens": "num_predict",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}


def finish_reason(done_reason: str | None, has_tool_calls: bool = False) -> str:
    """``length`` when the token limit cut the answer; ``tool_calls`` when tools were called;
    otherwise (``stop``, ``load``, ``unload``, missing) ``stop``."""
    if done_reason == "length":
        return "length"
    return "tool_calls" if has_tool_calls else "stop"


def usage_from(body: dict[str, Any]) -> Usage:
    """``prompt_eval_count`` is omitted when the whole prompt came from Ollama's cache."""
    prompt = body.get("prompt_eval_count") or 0
    completion = body.get("eval_count") or 0
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def call_id(index: int, name: str, arguments: str) -> str:
    """A stable id for a call Ollama sent without one: the same call at the same position
    always gets the same id (streamed or not)."""
    digest = hashlib.sha256(f"{index}\x00{name}\x00{arguments}".encode()).hexdigest()
    return f"call_{digest[:24]}"


def _tool_call(raw: dict[str, Any], index: int) -> ToolCall:
    """A call, ``index`` its position among the answer's calls."""
    fn = raw.get("function") or {}
    arguments = fn.get("arguments")
    if not isinstance(arguments, str):
        arguments = orjson.dumps(arguments or {}).decode()
    name = fn.get("name", "")
    return ToolCall(
        id=raw.get("id") or call_id(index, name, arguments),
        function=ToolCallFunction(name=name, arguments=arguments),
    )


def tools_for(tools: list[dict[str, Any]], choice: str | dict[str, Any] | None) -> list[dict[str, Any]]:
    """The tools to send for ``tool_choice`` (Ollama has none): see the module docstring."""
    if choice == "none":
        return []
    named = None
    if isinstance(choice, dict) and choice.get("type") == "function":
        named = (choice.get("function") or {}).get("name")
    out = []
    for t in tools:
        fn = t.get("function") if t.get("type") == "function" else None
        if isinstance(fn, dict):
            if named is not None and fn.get("name") != named:
                continue
            t = {"type": "function", "function": {k: v for k, v in fn.items() if k != "strict"}}
        elif named is not None:
            continue
        out.append(t)
    return out


# --- request translation -----------------------------------------------------------


def _message(m: Message, call_names: dict[str, str]) -> dict[str, Any]:
    """Ollama messages hold text plus a list of base64 ``images``; only inline (data:) images
    can be sent, as Ollama does not fetch URLs. ``call_names``: tool-call id -> function name,
    of the calls made earlier in the conversation."""
    out: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role}
    if isinstance(m.content, list):
        content, images = _parts(m.content)
        out["content"] = content
        if images:
            out["images"] = images
    else:
        out["content"] = m.content or ""
    if m.tool_calls:
        out["tool_calls"] = [
            {"function": {"name": tc.function.name, "arguments": tool_arguments(tc)}} for tc in m.tool_calls
        ]
    if m.role == "tool":
        name = m.name or call_names.get(m.tool_call_id or "")
        if name:
            out["tool_name"] = name
    return out


def _parts(parts: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """``(content, images)`` of a message's content parts (see the module docstring)."""
    content = ""
    after_document = False
    images: list[str] = []
    for part in parts:
        kind = _media.part_kind(part)
        if part.get("type") == "text":
            content += ("\n\n" if after_document else "") + part.get("text", "")
            after_document = False
        elif kind == "image":
            images.append(_image(part))
        elif kind == "file":
            ref = _media.part_media(part)
            if ref is None or not _media.is_text(ref):
                what = f"{ref.mime_type} files" if ref is not None else "files"
                raise _media.refuse("ollama", what, " (an alias with documents: extract sends a PDF's text)")
            document = _media.text_part(_media.filename(part, ref, "document.txt"), _media.text_of(ref))
            content += ("\n\n" if content else "") + document["text"]
            after_document = True
        elif kind == "audio":
            raise _media.refuse("ollama", "audio input")
        elif kind == "video":
            raise _media.refuse_video("ollama")
    return content, images


def _image(part: dict[str, Any]) -> str:
    """An image part's base64: the resolved media's, or an inline ``data:`` URL's (Ollama does
    not fetch URLs)."""
    ref = _media.part_media(part)
    if ref is not None:
        return _media.media_data(ref)
    url = _media.part_body(part).get("url")
    if not isinstance(url, str) or not url.startswith("data:"):
        raise CapabilityNotSupported("ollama accepts only inline (data:) images", param="messages")
    return url.partition(",")[2]


def to_messages(messages: list[Message]) -> list[dict[str, Any]]:
    call_names: dict[str, str] = {}
    out = []
    for m in messages:
        out.append(_message(m, call_names))
        for tc in m.tool_calls or ():
            call_names[tc.id] = tc.function.name
    return out


def _format(response_format: dict[str, Any]) -> str | dict[str, Any] | None:
    """OpenAI ``response_format`` as Ollama ``format``: ``"json"`` or a JSON schema."""
    if response_format.get("type") == "json_object":
        return "json"
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) else "json"
    return None


# --- stream -----------------------------------------------------------------------


class OllamaStreamParser:
    """Reads NDJSON chat lines. Content and whole tool calls arrive in ``message``; the
    ``done: true`` line carries the finish reason and token counts and is the final delta.
    ``{"error": ...}`` lines and a stream closed before ``done`` raise ``ProviderError``."""

    def __init__(self, provider: str = "ollama") -> None:
        self._provider = provider
        self._tools = 0
        self._done = False

    def feed(self, line: str) -> list[StreamDelta]:
        if self._done or not line.strip():
            return []
        chunk = loads_line(self._provider, line)
        if chunk.get("error"):
            raise ProviderError(
                f"{self._provider}: stream error: {chunk['error']}", details={"upstream_status": None}
            )
        model = chunk.get("model")
        message = chunk.get("message") or {}
        out: list[StreamDelta] = []
        raw_calls = message.get("tool_calls")
        calls = None
        if raw_calls:
            calls = []
            for raw in raw_calls:
                tc = _tool_call(raw, self._tools)
                calls.append(
                    ToolCallDelta(
                        index=self._tools, id=tc.id, name=tc.function.name, arguments=tc.function.arguments
                    )
                )
                self._tools += 1
        if message.get("content") or calls:
            out.append(StreamDelta(content=message.get("content") or None, tool_calls=calls, model=model))
        if chunk.get("done"):
            self._done = True
            reason = finish_reason(chunk.get("done_reason"), self._tools > 0)
            out.append(StreamDelta(finish_reason=reason, usage=usage_from(chunk), model=model))
        return out

    def close(self) -> list[StreamDelta]:
        if not self._done:
            raise ProviderError(
                f"{self._provider}: stream ended before the done line", details={"upstream_status": None}
            )
        return []


# --- adapter ----------------------------------------------------------------------


class OllamaAdapter(PostsJSON):
    """A local or remote Ollama server, through its native ``/api/chat``."""

    kind = "ollama"

    def to_wire(self, req: ChatRequested, deployment: Target, *, stream: bool) -> dict[str, Any]:
        """Typed params (when set) win over the same keys in ``extra``; ``model``,
        ``messages`` and ``stream`` are always the gateway's. ``tool_choice`` picks the tools
        sent (see the module docstring)."""
        params = req.params
        body: dict[str, Any] = dict(params.extra)
        body.pop("parallel_tool_calls", None)
        options: dict[str, Any] = dict(body.pop("options", None) or {})
        for name, option in OPTION_FIELDS.items():
            value = getattr(params, name)
            if value is not None:
                options[option] = value
        if options:
            body["options"] = options
        if params.tools and (tools := tools_for(params.tools, params.tool_choice)):
            body["tools"] = tools
        if params.response_format and (fmt := _format(params.response_format)) is not None:
            body["format"] = fmt
        body["model"] = deployment.upstream_model
        body["messages"] = to_messages(req.messages)
        body["stream"] = stream
        return body

    def from_wire(self, body: dict[str, Any], req: ChatRequested | None = None) -> Completion:
        message = body["message"]
        calls = [_tool_call(raw, i) for i, raw in enumerate(message.get("tool_calls") or ())] or None
        return Completion(
            message=AssistantMessage(content=message.get("content") or None, tool_calls=calls),
            finish_reason=finish_reason(body.get("done_reason"), bool(calls)),
            usage=usage_from(body),
            model=body.get("model") or "",
        )

    def stream_parser(self, provider: str = "ollama", req: ChatRequested | None = None) -> OllamaStreamParser:
        return OllamaStreamParser(provider)

    def endpoint(self, deployment: Target, api_key: str | None) -> tuple[str, dict[str, str]]:
        return f"{deployment.base_url.rstrip('/')}/api/chat", headers(bearer(api_key))
