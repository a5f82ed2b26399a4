"""Google Gemini API v1beta (``POST {base_url}/v1beta/models/{model}:generateContent``, streamed
by ``:streamGenerateContent?alt=sse``; ``base_url`` has no version: ``https://generativelanguage.googleapis.com``).

``to_wire`` translates the OpenAI-shaped request: system/developer messages become
``systemInstruction``, user / assistant turns ``contents`` of role ``user`` / ``model`` with
``parts``; the model is in the URL, never in the body. Sampling params go in
``generationConfig`` (``temperature``, ``topP``, ``maxOutputTokens`` (also from
``max_completion_tokens``), ``stopSequences``, ``seed``, ``presencePenalty``,
``frequencyPenalty``); ``response_format`` ``json_schema`` becomes ``responseMimeType:
application/json`` with ``responseJsonSchema``, ``json_object`` the mime type alone.
``params.extra`` keys go at the top level (``safetySettings``, ``cachedContent``, ...), except
``extra["generationConfig"]``, merged into ``generationConfig``, and OpenAI fields Gemini has no
place for (:data:`DROPPED`: ``parallel_tool_calls``, ``user``, ...), which are dropped (Gemini
refuses unknown fields). The key goes in ``x-goog-api-key``.

Tools: function tools become one ``{"functionDeclarations": [{name, description,
parametersJsonSchema}]}`` tool (JSON Schema as given); an untyped tool dict is a native Gemini
tool (``{"googleSearch": {}}``) and passes as is. ``tool_choice`` ``auto`` / ``none`` /
``required`` / a named function become ``toolConfig.functionCallingConfig.mode`` ``AUTO`` /
``NONE`` / ``ANY`` / ``ANY`` with ``allowedFunctionNames``. Gemini sends calls without ids (or
with its own): a call gets ``call_<n>``, ``n`` its position in the answer, so the streamed and
whole answers name it alike; an id the provider sent is kept. A Gemini 3 ``thoughtSignature``
rides in the id after ``~`` and goes back with the call, as Gemini requires. Tool results
become ``functionResponse`` parts (named after the call they answer, consecutive results in one
turn), a JSON object result as the ``response`` itself, anything else as ``{"output": text}``;
ids the gateway made are not sent back.

Media parts the media-store resolved (``part["media"]``, see ``_media.py``): images (png,
jpeg, webp, heic, heif), audio, video and PDF files go as ``inlineData`` while the request's
inline base64 stays within :data:`INLINE_MAX` (18 MiB, under Gemini's 20 MB request limit);
the rest are uploaded first through the Files API (``_gemini_files``) and go as
``fileData``, as does the caller's own https URL when the alias lets the provider fetch it.
Text files go as text parts (name, then text). The gateway's ``video_url`` part is video.
The ``media`` key never reaches the provider; parts without one keep their URL (``data:`` URLs
inline, others as ``fileData``).

Answers: the first candidate's non-thought text parts are the content, ``functionCall``
parts the tool calls. ``finishReason`` ``STOP`` is ``stop`` (``tool_calls`` when the model
called tools), ``MAX_TOKENS`` ``length``; ``SAFETY``, ``RECITATION``, ``BLOCKLIST``,
``PROHIBITED_CONTENT``, ``SPII`` and the image ones ``content_filter``, as is a prompt
blocked outright (``promptFeedback.blockReason``, no candidates). Usage: ``promptTokenCount``
(with tool-use prompt tokens) is the prompt, candidates plus thoughts the completion,
``cachedContentTokenCount`` the cached tokens. A stream ends with the chunk that has a
``finishReason``; ending before it is a ``ProviderError``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

import orjson

from services.contracts.errors import ProviderError
from services.contracts.events import (
    AssistantMessage,
    ChatRequested,
    ToolCall,
    ToolCallDelta,
    ToolCallFunction,
    Usage,
)

from ..targets import Target
from . import _gemini_files
from ._gemini_files import UploadedFile
from ._gemini_request import (
    DROPPED,
    INLINE_MAX,
    call_id,
    generation_config,
    split_call_id,
    to_contents,
    to_upload,
    tool_config,
    tools_of,
)
from ._http import headers, loads_line, post_json, sse_field, stream_deltas
from .base import Completion, StreamDelta
from .transport import HttpTransport

__all__ = ["INLINE_MAX", "GeminiAdapter", "GeminiStreamParser", "call_id", "split_call_id", "to_upload"]

API_VERSION = "v1beta"
_FINISH = {"STOP": "stop", "MAX_TOKENS": "length"}
_FILTERED = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)


def finish_reason(raw: str | None, has_tool_calls: bool = False) -> str:
    """Normalise ``finishReason``; unknown values (``OTHER``, ``LANGUAGE``, ...) count as ``stop``."""
    if raw in _FILTERED:
        return "content_filter"
    finish = _FINISH.get(raw or "STOP", "stop")
    return "tool_calls" if has_tool_calls and finish == "stop" else finish


def usage_from(u: dict[str, Any]) -> Usage:
    """``promptTokenCount`` includes cached tokens; thinking tokens are billed as output."""
    prompt = (u.get("promptTokenCount") or 0) + (u.get("toolUsePromptTokenCount") or 0)
    completion = (u.get("candidatesTokenCount") or 0) + (u.get("thoughtsTokenCount") or 0)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=u.get("totalTokenCount") or prompt + completion,
        cached_tokens=u.get("cachedContentTokenCount") or 0,
    )


# --- answers ---------------------------------------------------------------------------------------------


def _calls_and_text(parts: list[dict[str, Any]], first_index: int) -> tuple[list[str], list[ToolCallDelta]]:
    """Text pieces and calls (indexed from ``first_index``) of a candidate's parts; thoughts skipped."""
    texts: list[str] = []
    calls: list[ToolCallDelta] = []
    for part in parts:
        if part.get("thought"):
            continue
        if isinstance(part.get("text"), str) and part["text"]:
            texts.append(part["text"])
        elif isinstance(fc := part.get("functionCall"), dict):
            index = first_index + len(calls)
            calls.append(
                ToolCallDelta(
                    index=index,
                    id=call_id(index, fc.get("id"), part.get("thoughtSignature")),
                    name=fc["name"],
                    arguments=orjson.dumps(fc.get("args") or {}).decode(),
                )
            )
    return texts, calls


def _blocked(body: dict[str, Any]) -> bool:
    return bool((body.get("promptFeedback") or {}).get("blockReason"))


def stream_error(provider: str, err: Any) -> ProviderError:
    """An error object inside a 200 stream (``data: {"error": {...}}``)."""
    err = err if isinstance(err, dict) else {"message": str(err)}
    code = err.get("code")
    return ProviderError(
        f"{provider}: stream error: {err.get('message') or err}",
        details={
            "upstream_status": code if isinstance(code, int) else None,
            "upstream_type": err.get("status"),
        },
    )


class GeminiStreamParser:
    """Reads ``streamGenerateContent?alt=sse`` events, each a whole ``GenerateContentResponse``
    holding the next parts. Each call arrives whole in one event; its index counts the calls so
    far. Usage is the latest event's (Gemini repeats it, growing). The event with a
    ``finishReason`` (or a blocked prompt) finishes; ``close()`` before it raises ``ProviderError``."""

    def __init__(self, provider: str = "gemini") -> None:
        self._provider = provider
        self._model: str | None = None
        self._usage: Usage | None = None
        self._calls = 0
        self._done = False

    def feed(self, line: str) -> list[StreamDelta]:
        field = sse_field(line)
        if field is None or field[0] != "data" or self._done:
            return []
        chunk = loads_line(self._provider, field[1])
        if chunk.get("error") is not None:
            raise stream_error(self._provider, chunk["error"])
        self._model = chunk.get("modelVersion") or self._model
        if isinstance(chunk.get("usageMetadata"), dict):
            self._usage = usage_from(chunk["usageMetadata"])
        candidates = chunk.get("candidates") or []
        if not candidates:
            return self._final("content_filter") if _blocked(chunk) else []
        candidate = candidates[0]
        texts, calls = _calls_and_text((candidate.get("content") or {}).get("parts") or [], self._calls)
        self._calls += len(calls)
        out = [StreamDelta(content=t, model=self._model) for t in texts]
        if calls:
            out.append(StreamDelta(tool_calls=calls, model=self._model))
        if candidate.get("finishReason"):
            out.extend(self._final(finish_reason(candidate["finishReason"], self._calls > 0)))
        return out

    def _final(self, finish: str) -> list[StreamDelta]:
        self._done = True
        return [StreamDelta(finish_reason=finish, usage=self._usage, model=self._model)]

    def close(self) -> list[StreamDelta]:
        if not self._done:
            raise ProviderError(
                f"{self._provider}: stream ended before a finishReason", details={"upstream_status": None}
            )
        return []


# --- adapter ---------------------------------------------------------------------------------------------


class GeminiAdapter:
    """Gemini's ``generateContent``, with the OpenAI-shaped request translated. ``inline_max``:
    the most inline base64 per request before media is uploaded instead."""

    kind = "gemini"

    def __init__(self, inline_max: int = INLINE_MAX, poll_interval_s: float = _gemini_files.POLL_INTERVAL_S):
        self.inline_max = inline_max
        self.poll_interval_s = poll_interval_s

    def to_wire(
        self,
        req: ChatRequested,
        deployment: Target,
        *,
        stream: bool,
        files: Mapping[str, UploadedFile] | None = None,
    ) -> dict[str, Any]:
        """The body (the same streamed or not: the URL says). ``files``: media_id -> the upload
        that part goes as; every other media part goes inline (``complete`` / ``stream``
        upload what does not fit first)."""
        params = req.params
        body: dict[str, Any] = {k: v for k, v in params.extra.items() if k not in DROPPED}
        config = generation_config(params, body)
        system, contents = to_contents(req.messages, files)
        body["contents"] = contents
        if system:
            body["systemInstruction"] = {"parts": system}
        tools = tools_of(params.tools or [])
        if tools:
            body["tools"] = tools
            if params.tool_choice is not None:
                body["toolConfig"] = tool_config(params.tool_choice)
        if config:
            body["generationConfig"] = config
        return body

    def from_wire(self, body: dict[str, Any], req: ChatRequested | None = None) -> Completion:
        """The first candidate; no candidates at all is ``content_filter`` when the prompt was
        blocked, else a malformed answer."""
        usage = usage_from(body.get("usageMetadata") or {})
        model = body.get("modelVersion") or ""
        candidates = body.get("candidates") or []
        if not candidates:
            if not _blocked(body):
                raise ValueError("an answer with no candidates and no block reason")
            return Completion(AssistantMessage(content=None), "content_filter", usage, model)
        candidate = candidates[0]
        texts, deltas = _calls_and_text((candidate.get("content") or {}).get("parts") or [], 0)
        calls = [
            ToolCall(
                id=d.id or call_id(d.index),
                function=ToolCallFunction(name=d.name or "", arguments=d.arguments),
            )
            for d in deltas
        ]
        return Completion(
            message=AssistantMessage(content="".join(texts) if texts else None, tool_calls=calls or None),
            finish_reason=finish_reason(candidate.get("finishReason"), bool(calls)),
            usage=usage,
            model=model,
        )

    def stream_parser(self, provider: str = "gemini", req: ChatRequested | None = None) -> GeminiStreamParser:
        return GeminiStreamParser(provider)

    def endpoint(
        self, deployment: Target, api_key: str | None, *, stream: bool = False
    ) -> tuple[str, dict[str, str]]:
        model = deployment.upstream_model.removeprefix("models/")
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        url = f"{deployment.base_url.rstrip('/')}/{API_VERSION}/models/{model}:{method}"
        return url, headers(self._auth(api_key))

    @staticmethod
    def _auth(api_key: str | None) -> dict[str, str]:
        return {"x-goog-api-key": api_key} if api_key else {}

    async def upload_media(
        self, http: HttpTransport, req: ChatRequested, deployment: Target, api_key: str | None
    ) -> dict[str, UploadedFile]:
        """Upload the media that does not fit inline (:func:`to_upload`); media_id -> file."""
        files: dict[str, UploadedFile] = {}
        for ref in to_upload(req, self.inline_max):
            files[ref.media_id] = await _gemini_files.upload(
                http,
                deployment.provider,
                deployment.base_url,
                self._auth(api_key),
                ref,
                poll_interval_s=self.poll_interval_s,
            )
        return files

    async def complete(
        self, http: HttpTransport, req: ChatRequested, deployment: Target, api_key: str | None
    ) -> Completion:
        files = await self.upload_media(http, req, deployment, api_key)
        body = self.to_wire(req, deployment, stream=False, files=files)
        url, hdrs = self.endpoint(deployment, api_key)
        done = await post_json(
            http, deployment.provider, url, hdrs, body, lambda data: self.from_wire(data, req)
        )
        done.model = done.model or deployment.upstream_model
        return done

    async def stream(
        self, http: HttpTransport, req: ChatRequested, deployment: Target, api_key: str | None
    ) -> AsyncGenerator[StreamDelta, None]:
        """An async generator: nothing is sent (no upload either) until it is iterated."""
        files = await self.upload_media(http, req, deployment, api_key)
        body = self.to_wire(req, deployment, stream=True, files=files)
        url, hdrs = self.endpoint(deployment, api_key, stream=True)
        async for delta in stream_deltas(
            http, deployment.provider, url, hdrs, body, self.stream_parser(deployment.provider)
        ):
            yield delta


#: (kind, operation) -> adapter, merged into the registry.
ADAPTERS: dict[tuple[str, str], Any] = {("gemini", "chat"): GeminiAdapter()}
