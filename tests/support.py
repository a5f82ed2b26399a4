"""Test helpers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any


async def eventually(condition: Callable[[], bool], within: float = 30.0, step: float = 0.02) -> None:
    """Wait until ``condition()`` holds (checked every ``step``); fail after ``within`` seconds.

    For state with no event to wait on (a consumer group's assignment, a counter kept by a
    handler): the test synchronises on the condition itself, never on a fixed sleep."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(step)


@asynccontextmanager
async def realtime_sdk(url: str, model: str, *, api_key: str, dialect: str = "ga") -> AsyncIterator[Any]:
    """A Realtime connection of the official SDK's GA (``client.realtime``) or beta
    (``client.beta.realtime``) client to ``url`` (the emulator, or the edge)."""
    import openai

    client = openai.AsyncOpenAI(
        base_url=f"{url}/v1", websocket_base_url=f"{url.replace('http', 'ws', 1)}/v1", api_key=api_key
    )
    manager = (
        client.beta.realtime.connect(model=model)
        if dialect == "beta"
        else client.realtime.connect(model=model)
    )
    async with manager as conn:
        yield conn
    await client.close()


async def events_until(conn: Any, last: str, timeout: float) -> list[Any]:
    """A Realtime connection's events received up to and including the first of type ``last``."""
    events = []
    async with asyncio.timeout(timeout):
        while True:
            event = await conn.recv()
            events.append(event)
            if event.type == last:
                return events


def events_of(events: list[Any], kind: str) -> list[Any]:
    return [e for e in events if e.type == kind]
