"""Test helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(condition: Callable[[], bool], within: float = 30.0, step: float = 0.02) -> None:
    """Wait until ``condition()`` holds (checked every ``step``); fail after ``within`` seconds.

    For state with no event to wait on (a consumer group's assignment, a counter kept by a
    handler): the test synchronises on the condition itself, never on a fixed sleep."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(step)
