"""The gateway's chat answer as Anthropic's: the ``message`` object, ``stop_reason``, usage: pure.

Answer (``message_json``): ``{id: "msg_<request id>", type: "message", role: "assistant",
model: <alias>, content: [text block, tool_use blocks], stop_reason, stop_sequence: null,
usage}``. ``usage.input_tokens`` excludes cached prompt tokens, as Anthropic counts them
(``cache_read_input_tokens`` holds those).
"""

from __future__ import annotations

from typing import Any

import orjson

from services.contracts.events import ResultProduced, Usage

Json = dict[str, Any]

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}


def message_id(request_id: str) -> str:
    return f"msg_{request_id}"


def stop_reason(finish: str | None, used_tools: bool) -> str:
    """Anthropic's ``stop_reason``. The pipeline's ``stop`` does not say whether a stop sequence
    ended the answer, so it is ``end_turn``; ``stop`` with tool calls is ``tool_use``."""
    reason = _STOP.get(finish or "stop", "end_turn")
    return "tool_use" if used_tools and reason == "end_turn" else reason


def usage_json(u: Usage | None, estimate: int = 0) -> Json:
    """Anthropic usage: ``input_tokens`` without the cached ones (``cache_read_input_tokens``).
    Without the upstream's usage, ``input_tokens`` is ``estimate``."""
    if u is None:
        return {"input_tokens": estimate, "output_tokens": 0, "cache_read_input_tokens": 0}
    return {
        "input_tokens": max(u.prompt_tokens - u.cached_tokens, 0),
        "output_tokens": u.completion_tokens,
        "cache_read_input_tokens": u.cached_tokens,
    }


def tool_input(arguments: str) -> Json:
    """A tool call's arguments as the ``input`` object (``{}`` when they are not a JSON object)."""
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def message_json(result: ResultProduced, model: str) -> Json:
    """A successful chat result as an Anthropic ``message``."""
    msg = result.message
    content: list[Json] = []
    if msg is not None and msg.content:
        content.append({"type": "text", "text": msg.content})
    calls = (msg.tool_calls if msg is not None else None) or []
    content.extend(
        {
            "type": "tool_use",
            "id": tc.id,
            "name": tc.function.name,
            "input": tool_input(tc.function.arguments),
        }
        for tc in calls
    )
    return {
        "id": message_id(result.request_id),
        "type": "message",
        "role": "assistant",
        "model": result.alias or model,
        "content": content,
        "stop_reason": stop_reason(result.finish_reason, bool(calls)),
        "stop_sequence": None,
        "usage": usage_json(result.usage),
    }
