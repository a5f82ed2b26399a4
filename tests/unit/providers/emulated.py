"""Adapters against the provider emulator in-process (its ASGI app behind ``AsgiTransport``):
the capability suites (tools, structured output) check each chat adapter against the
emulator's wire formats, sync and streaming, with no network."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.contracts.events import ChatParams, ChatRequested, Message, ToolCall, ToolCallDelta
from services.emulator import create_app
from services.executor.providers.base import StreamDelta
from services.executor.providers.registry import adapters
from services.executor.targets import Target

from .support import AsgiTransport

CHAT = adapters("chat")
KINDS = sorted(CHAT)
#: Where each wire format lives on the emulator.
BASE_URL = {
    "openai": "http://emulator/v1",
    "anthropic": "http://emulator",
    "ollama": "http://emulator",
    "gemini": "http://emulator",
}


@pytest.fixture
async def emulator() -> AsyncIterator[AsgiTransport]:
    async with AsgiTransport(create_app()) as http:
        yield http


def target(kind: str, scenario: str = "") -> Target:
    """A deployment of ``kind`` on the emulator; ``scenario`` goes in the model name."""
    model = f"emu-model@{scenario}" if scenario else "emu-model"
    return Target(
        alias="alias", provider=f"{kind}-emu", kind=kind, base_url=BASE_URL[kind], upstream_model=model
    )


def request(*messages: dict[str, Any], **params: Any) -> ChatRequested:
    msgs = [Message.model_validate(m) for m in messages] or [Message(role="user", content="hi")]
    return ChatRequested(
        request_id="req-1", tenant_id="t1", model="alias", messages=msgs, params=ChatParams(**params)
    )


def assembled(deltas: list[StreamDelta]) -> list[ToolCallDelta]:
    """The streamed tool calls put together by index, as the executor does."""
    calls: dict[int, ToolCallDelta] = {}
    for d in deltas:
        for tc in d.tool_calls or ():
            cur = calls.setdefault(tc.index, ToolCallDelta(index=tc.index))
            cur.id, cur.name = cur.id or tc.id, cur.name or tc.name
            cur.arguments += tc.arguments
    return [calls[i] for i in sorted(calls)]


def as_message_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [c.model_dump() for c in calls]
