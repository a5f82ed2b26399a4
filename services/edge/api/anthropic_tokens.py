"""Prompt tokens of a mapped Anthropic request, estimated without a tokenizer (an alias may be
served by models with different ones): for ``count_tokens`` and a stream's ``message_start``.

UTF-8 bytes / 4, rounded up, of every text, tool call, tool result and tool definition, plus 4
per message and 3 per request (the router's chat-template allowance), plus 1600 per image and
per non-text document (the router's per-image figure); a text document counts by its text.
"""

from __future__ import annotations

from typing import Any

import orjson

from .chat import ChatCall

Json = dict[str, Any]

#: Tokens counted per image and per non-text document, per message and per request.
IMAGE_TOKENS, PER_MESSAGE_TOKENS, PER_REQUEST_TOKENS = 1600, 4, 3


def _tokens(n_bytes: int) -> int:
    return -(-n_bytes // 4)


def _part_tokens(p: Json) -> int:
    kind = p.get("type")
    if kind == "text":
        return _tokens(len(str(p.get("text", "")).encode()))
    if kind == "file":
        data = p["file"].get("file_data") if isinstance(p.get("file"), dict) else None
        if isinstance(data, str) and data.startswith("data:text/"):
            return _tokens(len(data.partition(",")[2]) * 3 // 4)
    return IMAGE_TOKENS


def estimate_tokens(call: ChatCall) -> int:
    """Prompt tokens of a mapped request, estimated (see the module docstring)."""
    n = PER_REQUEST_TOKENS
    for m in call.messages:
        n += PER_MESSAGE_TOKENS
        c = m.get("content")
        if isinstance(c, str):
            n += _tokens(len(c.encode()))
        elif isinstance(c, list):
            n += sum(_part_tokens(p) for p in c)
        for tc in m.get("tool_calls") or ():
            fn = tc["function"]
            n += _tokens(len(fn["name"].encode()) + len(fn["arguments"].encode()))
    tools = call.fields.get("tools")
    if tools:
        n += _tokens(len(orjson.dumps(tools)))
    return n
