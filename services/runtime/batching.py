"""Batches for sinks on top of ``services.runtime.kafka.Consumer``: the per-record handler adds
its record and awaits the write of the batch holding it, so the Consumer commits an offset
only once its record is written (the Consumer's own rule: offsets below the oldest unfinished
handler), while one write carries many records.

Each lane (a topic partition) has at most one write in flight, and writes in offset order: a
lane's batch k+1 is written only once batch k is. A batch closes when it holds ``max_items``
items or ``max_bytes`` bytes, or ``max_wait_s`` after its first item; batches that closed while
the lane was writing go out together as one (up to ``max_items``). A failed write is retried
with backoff until it succeeds or the batcher is closed: a sink that cannot reach its store
stops committing and holds its records, it never drops or dead-letters them.

While tracing records (``telemetry``), a batcher given ``traced`` makes one consumer span per
write, child of its first record's trace context and linked to the others' (the context current
when each was added: a sink's ``consuming(span=False)``), rather than a span per record: at load,
a sink writes dozens of records at once, and a span each would cost more than the write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from opentelemetry.trace import SpanContext

from . import telemetry

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


@dataclass
class _Batch(Generic[T]):
    done: asyncio.Future[None]
    items: list[T] = field(default_factory=list)
    size: int = 0
    contexts: list[SpanContext] = field(default_factory=list)  # the traced items' (``traced``)


@dataclass
class _Lane(Generic[T]):
    open: _Batch[T] | None = None
    closed: deque[_Batch[T]] = field(default_factory=deque)
    timer: asyncio.TimerHandle | None = None
    writer: asyncio.Task[None] | None = None


class Batcher(Generic[K, T]):
    """``await add(lane, item, size)`` returns once ``write(lane, items)`` has stored the item's batch.

    If the batcher is closed first, ``add`` raises ``CancelledError`` (the record stays
    uncommitted and is redelivered).
    """

    def __init__(
        self,
        write: Callable[[K, list[T]], Awaitable[None]],
        *,
        max_items: int,
        max_wait_s: float,
        max_bytes: int = 16 * 1024 * 1024,
        retry_s: tuple[float, float] = (0.1, 5.0),
        call_later: Callable[[float, Callable[[], None]], asyncio.TimerHandle] | None = None,
        traced: Callable[[K, int], tuple[str, Mapping[str, Any]]] | None = None,
    ):
        self._write = write
        self._traced = traced  # (lane, items) -> the name and attributes of a write's span
        self.max_items = max_items
        self.max_wait_s = max_wait_s
        self.max_bytes = max_bytes
        self._retry_s = retry_s
        self._lanes: dict[K, _Lane[T]] = {}
        self._closing = False
        self._call_later = call_later  # tests end windows by hand; default: the loop's clock

    async def add(self, lane: K, item: T, size: int = 0) -> None:
        if self._closing:
            raise asyncio.CancelledError
        ln = self._lanes.get(lane)
        if ln is None:
            ln = self._lanes[lane] = _Lane()
        batch = ln.open
        if batch is None:
            loop = asyncio.get_running_loop()
            batch = ln.open = _Batch(loop.create_future())
            ln.timer = (self._call_later or loop.call_later)(self.max_wait_s, lambda: self._close(lane))
        batch.items.append(item)
        batch.size += size
        if self._traced is not None and (ctx := telemetry.current_context()) is not None:
            batch.contexts.append(ctx)
        if len(batch.items) >= self.max_items or batch.size >= self.max_bytes:
            self._close(lane)
        await asyncio.shield(batch.done)

    def flush(self) -> None:
        """Close every open batch now (their writes start at once)."""
        for lane in list(self._lanes):
            self._close(lane)

    async def aclose(self, grace_s: float = 5.0) -> None:
        """Write what is open (for up to ``grace_s``), then cancel what is still unwritten."""
        self._closing = True
        self.flush()
        writers = [ln.writer for ln in self._lanes.values() if ln.writer is not None]
        if writers:
            await asyncio.wait(writers, timeout=grace_s)
        for ln in self._lanes.values():
            if ln.writer is not None:
                ln.writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ln.writer
            for batch in ln.closed:
                batch.done.cancel()

    def _close(self, lane: K) -> None:
        ln = self._lanes[lane]
        if ln.timer is not None:
            ln.timer.cancel()
            ln.timer = None
        if ln.open is None:
            return
        ln.closed.append(ln.open)
        ln.open = None
        if ln.writer is None or ln.writer.done():
            ln.writer = asyncio.get_running_loop().create_task(
                self._drain(lane, ln), name=f"batch-writer:{lane}"
            )

    async def _drain(self, lane: K, ln: _Lane[T]) -> None:
        while ln.closed:
            taken = [ln.closed.popleft()]
            count = len(taken[0].items)
            while ln.closed and count + len(ln.closed[0].items) <= self.max_items:
                count += len(ln.closed[0].items)
                taken.append(ln.closed.popleft())
            items = taken[0].items if len(taken) == 1 else [i for b in taken for i in b.items]
            contexts = [c for b in taken for c in b.contexts]
            span = None
            if contexts and self._traced is not None and telemetry.recording():
                name, attrs = self._traced(lane, len(items))
                span = telemetry.batch_span(name, contexts, attrs)
            try:
                with telemetry.active(span, end=True):
                    await self._write_until_done(lane, items)
            except asyncio.CancelledError:
                for b in taken:
                    b.done.cancel()
                raise
            for b in taken:
                if not b.done.done():
                    b.done.set_result(None)

    async def _write_until_done(self, lane: K, items: list[T]) -> None:
        delay, cap = self._retry_s
        while True:
            try:
                await self._write(lane, items)
                return
            except Exception:
                log.warning(
                    "writing a batch of %d for %s failed; retrying in %.1fs",
                    len(items),
                    lane,
                    delay,
                    exc_info=True,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, cap)
