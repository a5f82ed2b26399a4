"""The text of a request, for hooks that read or rewrite it: message contents (a string, or the
``text`` of each text part), tool-call arguments of earlier assistant turns, embeddings inputs,
an image prompt, the text read aloud, a transcription's prompt."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from services.contracts.events import (
    ChatRequested,
    EmbedRequested,
    ImageGenerateRequested,
    Message,
    SpeechRequested,
    VideoGenerateRequested,
)

from .roles import HookRequest

#: The one text field of the requests that have one.
_TEXT_FIELD: dict[type, str] = {
    ImageGenerateRequested: "prompt",
    SpeechRequested: "input",
    VideoGenerateRequested: "prompt",
}


def _single(req: HookRequest) -> str | None:
    """The field holding the text of a request with one text (a transcription's prompt too)."""
    name = _TEXT_FIELD.get(type(req))
    if name is None and not isinstance(req, ChatRequested | EmbedRequested):
        name = "prompt"
    return name


def texts(req: HookRequest) -> Iterator[str]:
    """One text per message (its text parts joined, then its tool-call arguments), or per
    embeddings input: what a scanner reads. Parts are joined without a separator so a term
    split across two parts of a message is still found."""
    if isinstance(req, EmbedRequested):
        yield from req.input
        return
    if not isinstance(req, ChatRequested):
        name = _single(req)
        value = getattr(req, name) if name else None
        if isinstance(value, str):
            yield value
        return
    for m in req.messages:
        c = m.content
        if isinstance(c, str):
            yield c
        elif c:
            yield "".join(p["text"] for p in c if p.get("type") == "text" and isinstance(p.get("text"), str))
        for tc in m.tool_calls or ():
            yield tc.function.arguments


def rewrite(req: HookRequest, fn: Callable[[str], str]) -> HookRequest | None:
    """``req`` with ``fn`` applied to each text (each part on its own), or None when ``fn``
    changed nothing (the request is then not copied)."""
    if isinstance(req, EmbedRequested):
        inputs = [fn(t) for t in req.input]
        return None if inputs == req.input else req.model_copy(update={"input": inputs})
    if not isinstance(req, ChatRequested):
        field = _single(req)
        value = getattr(req, field) if field else None
        if field is None or not isinstance(value, str) or (changed := fn(value)) == value:
            return None
        return req.model_copy(update={field: changed})
    messages: list[Message] | None = None
    for i, m in enumerate(req.messages):
        new = _message(m, fn)
        if new is not None:
            if messages is None:
                messages = list(req.messages)
            messages[i] = new
    return None if messages is None else req.model_copy(update={"messages": messages})


def _message(m: Message, fn: Callable[[str], str]) -> Message | None:
    update: dict[str, object] = {}
    c = m.content
    if isinstance(c, str):
        if (t := fn(c)) != c:
            update["content"] = t
    elif c:
        parts = [_part(p, fn) for p in c]
        if any(a is not b for a, b in zip(parts, c, strict=True)):
            update["content"] = parts
    if m.tool_calls:
        calls = []
        for tc in m.tool_calls:
            args = fn(tc.function.arguments)
            calls.append(
                tc
                if args == tc.function.arguments
                else tc.model_copy(update={"function": tc.function.model_copy(update={"arguments": args})})
            )
        if any(a is not b for a, b in zip(calls, m.tool_calls, strict=True)):
            update["tool_calls"] = calls
    return m.model_copy(update=update) if update else None


def _part(p: dict[str, Any], fn: Callable[[str], str]) -> dict[str, Any]:
    if p.get("type") != "text" or not isinstance(p.get("text"), str):
        return p
    t = fn(p["text"])
    return p if t == p["text"] else {**p, "text": t}
