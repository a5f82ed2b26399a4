"""Server-sent events from a pipeline stream, with the guarantees the edge owes its callers.

``SseResponse`` runs three things per stream:

* the *pump* iterates the event source (``Pipeline.stream``) and encodes each event into
  a per-stream buffer;
* the *writer* (the ASGI task) sends what is buffered; while nothing arrives for
  ``keepalive_s`` it sends ``: keep-alive`` comments;
* the *watcher* waits for the HTTP client to go away.

Guarantees:

* The status line waits for the first event (or the first keep-alive): a request the
  pipeline rejects gets its proper HTTP status and error body, not a 200 stream.
* Disconnect stops the pump, and closing the source publishes the cancel event.
* Memory per stream is bounded: when the client reads slower than the answer arrives
  and more than ``buffer_limit`` bytes wait, the source is closed (cancelling the
  request) and the stream ends with an error event.
* An error after the status line is an SSE ``data: {"error": ...}`` event. When the
  server cancels the stream (shutdown past its grace period) the stream also ends with
  one, and the request is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Protocol

from services.contracts.errors import Cancelled, GatewayError, InternalError

from .asgi import Headers, Receive, Send

log = logging.getLogger(__name__)

KEEPALIVE = b": keep-alive\n\n"
SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class SseEncoder(Protocol):
    """Turns one kind of stream into SSE bytes."""

    def encode(self, event: Any) -> bytes:
        """SSE bytes for one event of the source (may be several SSE events, or none)."""

    def end(self) -> bytes:
        """Bytes after the last event (e.g. ``data: [DONE]``)."""

    def error(self, err: GatewayError) -> bytes:
        """An error event ending the stream."""

    def first_headers(self, event: Any, elapsed_ms: float) -> Headers:
        """Response headers that depend on the first event (``elapsed_ms`` since the request)."""


ErrorBody = Callable[[GatewayError], tuple[int, bytes]]
#: More response headers from the first event (beside the encoder's ``first_headers``).
FirstHeaders = Callable[[Any], Headers]
#: Headers of an error answered before the status line (``Retry-After`` of a rate limit, ...).
ErrorHeaders = Callable[[GatewayError], Headers]


class SseResponse:
    def __init__(
        self,
        events: AsyncIterator[Any],
        encoder: SseEncoder,
        *,
        started: float,
        keepalive_s: float,
        buffer_limit: int,
        error_body: ErrorBody,
        headers: Headers | None = None,
        more_first_headers: FirstHeaders | None = None,
        error_headers: ErrorHeaders | None = None,
    ):
        self.headers: Headers = [*SSE_HEADERS, *(headers or ())]
        self._more_first = more_first_headers
        self._error_headers = error_headers
        self._n_own = len(SSE_HEADERS)
        self._events = events
        self._encoder = encoder
        self._started = started
        self._keepalive_s = keepalive_s
        self._limit = buffer_limit
        self._error_body = error_body
        self._buf: list[bytes] = []
        self._size = 0
        self._first: list[tuple[bytes, bytes]] | None = None
        self._error: GatewayError | None = None
        self._done = False
        self._gone = False
        self._wake = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None
        self._sent_head = False
        self._finished = False

    async def __call__(self, send: Send, receive: Receive) -> None:
        self._pump_task = pump = asyncio.create_task(self._pump())
        watcher = asyncio.create_task(self._watch(receive))
        try:
            await self._write(send)
        except asyncio.CancelledError:
            # the server stops waiting for us (shutdown past its grace): end the stream explicitly
            pump.cancel()
            if not (self._gone or self._finished):
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    async with asyncio.timeout(1.0):
                        await self._fail(
                            send, InternalError("the gateway is shutting down; retry the request")
                        )
            raise
        finally:
            watcher.cancel()
            if not pump.done():
                pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump  # its source's cleanup publishes the cancel when the stream stopped early

    # --- the three parts ---------------------------------------------------------------------

    async def _pump(self) -> None:
        events = self._events
        try:
            async for event in events:
                data = self._encoder.encode(event)
                if self._first is None:
                    self._first = self._encoder.first_headers(
                        event, (time.perf_counter() - self._started) * 1000
                    )
                    if self._more_first is not None:
                        self._first = [*self._first, *self._more_first(event)]
                if data:
                    self._buf.append(data)
                    self._size += len(data)
                    self._wake.set()
                if self._size > self._limit:
                    raise Cancelled(
                        f"stream cancelled: the client read too slowly ({self._size} bytes waiting, limit {self._limit})"
                    )
        except GatewayError as err:
            self._error = err
        except Exception as exc:
            log.exception("stream source failed")
            self._error = InternalError(f"stream failed: {type(exc).__name__}")
        finally:
            try:
                if isinstance(events, AsyncGenerator):  # its cleanup (the cancel) runs now
                    await events.aclose()
            finally:
                self._done = True
                self._wake.set()

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not self._done:
            self._gone = True
            if self._pump_task is not None:
                self._pump_task.cancel()
            self._wake.set()

    async def _write(self, send: Send) -> None:
        while True:
            if not self._buf and not self._done:
                self._wake.clear()
                try:
                    async with asyncio.timeout(self._keepalive_s):
                        await self._wake.wait()
                except TimeoutError:
                    if self._gone:
                        return
                    await self._head(send, [])
                    await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
                    continue
            if self._gone:
                return
            if not self._sent_head:
                if self._error is not None and not self._buf:
                    await self._fail(send, self._error)
                    return
                await self._head(send, self._first or [])
            data = b"".join(self._buf)
            self._buf.clear()
            self._size = 0
            if self._done:
                tail = self._encoder.error(self._error) if self._error else self._encoder.end()
                self._finished = True
                await send({"type": "http.response.body", "body": data + tail})
                return
            await send({"type": "http.response.body", "body": data, "more_body": True})

    async def _head(self, send: Send, extra: Headers) -> None:
        if not self._sent_head:
            self._sent_head = True
            await send({"type": "http.response.start", "status": 200, "headers": [*self.headers, *extra]})

    async def _fail(self, send: Send, err: GatewayError) -> None:
        """End the response with ``err``: a JSON error before the status line, else an error event."""
        self._finished = True
        if not self._sent_head:
            self._sent_head = True
            status, body = self._error_body(err)
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *self.headers[self._n_own :],
                *(self._error_headers(err) if self._error_headers else ()),
            ]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        else:
            await send({"type": "http.response.body", "body": self._encoder.error(err)})
