"""Chunk coalescing: the first delta goes out at once; later deltas are merged and sent
at most once per window, so a 100 tokens/s stream does not make 100 events/s.

``seq`` is assigned and the record handed to the producer under one lock, so chunk
events reach the partition in ``seq`` order, gap-free from 0.

With a ``guard`` (the tenant's post-response hooks, ``hooks.response_guard``) every flush first
asks it about the text: it sees what was sent and what would go out, and answers the text to send
instead, or raises the ``GatewayError`` that ends the stream there (``response_blocked``). A
blocked stream's last chunk is sent at once, from that flush: ``final``, finish reason
``error``, the error, and none of the text that was held back; ``blocked`` then holds the error
and later deltas are dropped (the stream loop stops reading the provider when it sees it).
Tool-call deltas are not shown to the guard.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from services.contracts.errors import GatewayError
from services.contracts.events import ChunkEmitted, Delta, ErrorInfo, ToolCallDelta, Usage, new_id

Send = Callable[[ChunkEmitted], Awaitable["asyncio.Future[object]"]]
#: ``guard(sent, pending, final) -> text to send`` (raises ``GatewayError`` to end the stream).
Guard = Callable[[str, str, bool], Awaitable[str]]


class ChunkEmitter:
    def __init__(self, send: Send, template: ChunkEmitted, window_ms: int, guard: Guard | None = None):
        self._send = send
        self._guard = guard
        self.shown = ""  # with a guard: the text sent so far, as the guard let it through
        self.blocked: GatewayError | None = None
        self.closed = False
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

    @property
    def guarded(self) -> bool:
        return self._guard is not None

    async def add(self, content: str | None, tool_calls: list[ToolCallDelta] | None) -> None:
        if self.closed:
            return
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
            if self.closed or not (self._text or self._tools or final):
                return
            now = time.time()  # one reading for the window and the chunk's occurred_at
            if not final and self.seq > 0 and now - self._last_sent < self._window:
                self._arm()  # a flush came early (a late timer raced another): keep the window
                return
            held: list[str] = []  # text that arrived while the guard was asked: the next flush's
            if self._guard is not None and error is None and (self._text or final):
                blocked, held = await self._check(final)
                if blocked is not None:  # nothing held back goes out: the stream ends here
                    self._text, self._tools, held = [], {}, []
                    final, finish_reason, error = True, "error", _error_info(blocked)
            delta = Delta(
                role="assistant" if self.seq == 0 else None,
                content="".join(self._text) if self._text else None,
                tool_calls=[self._tools[i] for i in sorted(self._tools)] if self._tools else None,
            )
            self._text, self._tools = held, {}
            update = {
                "event_id": new_id(),
                "occurred_at": datetime.fromtimestamp(now, UTC),
                "seq": self.seq,
                "delta": delta,
                "final": final,
                "finish_reason": finish_reason,
                "usage": usage,
            }
            if error is not None:
                update["error"] = error
            chunk = self._template.model_copy(update=update)
            if self.seq > 0:
                chunk.model = chunk.provider = chunk.ttft_ms = chunk.fallback = chunk.ratelimit = None
            self.seq += 1
            self._last_sent = now
            self.closed = final
            self.acks.append(await self._send(chunk))
            if held:
                self._arm()

    async def _check(self, final: bool) -> tuple[GatewayError | None, list[str]]:
        """The guard's verdict on the buffered text: ``(None, held)``, the buffer then holding
        what may go out, or ``(the error that blocks the stream, [])`` (kept in ``blocked``).
        ``held``: deltas added while the guard was deciding (it may await), kept for the next
        flush. (A final flush has none: the stream loop has ended when ``finish`` runs.)"""
        assert self._guard is not None
        pending, self._text = "".join(self._text), []
        try:
            allowed = await self._guard(self.shown, pending, final)
        except GatewayError as err:
            self.blocked = err
            return err, []
        held, self._text = self._text, [allowed] if allowed else []
        self.shown += allowed
        return None, held

    async def finish(
        self, finish_reason: str, usage: Usage | None, *, error: ErrorInfo | None = None
    ) -> None:
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


def _error_info(err: GatewayError) -> ErrorInfo:
    return ErrorInfo(
        code=err.code,
        message=err.message,
        retryable=err.retryable,
        param=err.param,
        details=err.details,
    )
