"""Chunk coalescing: the first delta goes out at once; later deltas are merged and sent
at most once per window, so a 100 tokens/s stream does not make 100 events/s.

``seq`` is assigned and the record handed to the producer under one lock, so chunk
events reach the partition in ``seq`` order, gap-free from 0.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from services.contracts.events import ChunkEmitted, Delta, ErrorInfo, ToolCallDelta, Usage, new_id

Send = Callable[[ChunkEmitted], Awaitable["asyncio.Future[object]"]]


class ChunkEmitter:
    def __init__(self, send: Send, template: ChunkEmitted, window_ms: int):
        self._send = send
        self._template = template
        self._window = window_ms / 1000
        self._lock = asyncio.Lock()
        self._text: list[str] = []
        self._tools: dict[int, ToolCallDelta] = {}
        self._last_sent = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self.seq = 0
        self.acks: list[asyncio.Future[object]] = []

    def set_source(self, provider: str, model: str) -> None:
        """Provider and model named on the first chunk."""
        self._template.provider, self._template.model = provider, model

    def set_fallback(self, fallback: str) -> None:
        """``'<first planned> -> <answering>'``, named on the first chunk when a fallback answers."""
        self._template.fallback = fallback

    def first_token(self, ttft_ms: float) -> None:
        """The provider's time to first token, named on the first chunk."""
        self._template.ttft_ms = ttft_ms

    @property
    def sent_any(self) -> bool:
        return self.seq > 0 or bool(self._text) or bool(self._tools)

    async def add(self, content: str | None, tool_calls: list[ToolCallDelta] | None) -> None:
        if content:
            self._text.append(content)
        for tc in tool_calls or ():
            cur = self._tools.get(tc.index)
            if cur is None:
                self._tools[tc.index] = tc.model_copy()
            else:
                cur.arguments += tc.arguments
                cur.id = cur.id or tc.id
                cur.name = cur.name or tc.name
        if not (self._text or self._tools):
            return
        if self.seq == 0:
            await self._flush()
        else:
            self._arm()

    def _arm(self) -> None:
        """Flush at the end of the current window (at once if it is over); one timer at a time."""
        if self._timer is None:
            wait = max(self._last_sent + self._window - time.time(), 0.0)
            self._timer = asyncio.get_running_loop().call_later(wait, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._flushing = asyncio.ensure_future(self._flush())

    async def _flush(
        self,
        *,
        final: bool = False,
        finish_reason: str | None = None,
        usage: Usage | None = None,
        error: ErrorInfo | None = None,
    ) -> None:
        async with self._lock:
            if not (self._text or self._tools or final):
                return
            now = time.time()  # one reading for the window and the chunk's occurred_at
            if not final and self.seq > 0 and now - self._last_sent < self._window:
                self._arm()  # a flush came early (a late timer raced another): keep the window
                return
            delta = Delta(
                role="assistant" if self.seq == 0 else None,
                content="".join(self._text) if self._text else None,
                tool_calls=[self._tools[i] for i in sorted(self._tools)] if self._tools else None,
            )
            self._text, self._tools = [], {}
            update = {"event_id": new_id(), "occurred_at": datetime.fromtimestamp(now, UTC), "seq": self.seq, "delta": delta, "final": final, "finish_reason": finish_reason, "usage": usage}
            if error is not None:
                update["error"] = error
            chunk = self._template.model_copy(update=update)
            if self.seq > 0:
                chunk.model = chunk.provider = chunk.ttft_ms = chunk.fallback = None
            self.seq += 1
            self._last_sent = now
            self.acks.append(await self._send(chunk))

    async def finish(self, finish_reason: str, usage: Usage | None, *, error: ErrorInfo | None = None) -> None:
        """Send what is buffered with the terminal chunk (finish reason and usage; ``error``
        when the answer failed after streaming, with finish reason ``error``)."""
        self.cancel_timer()
        if self._flushing is not None:
            await self._flushing
        await self._flush(final=True, finish_reason=finish_reason, usage=usage, error=error)

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
