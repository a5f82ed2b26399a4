"""The edge's HTTP protocol: uvicorn's httptools protocol, with a response's head and body
written to the socket together, and the app told at once when a client disconnects.

uvicorn writes a response's head when the app sends ``http.response.start`` and its body
on ``http.response.body``: two ``send`` calls, two TCP segments and two wake-ups of the
client for every whole response. ``_Coalescing`` holds a write back until the end of the
event-loop turn and joins it with any write made before then, so a whole response leaves
in one segment; a stream's head, sent alone, still leaves within the same turn.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .asgi import DISCONNECT_HOOK


class _Coalescing:
    """A transport that joins the writes of one loop turn into one (see the module docstring).
    ``close`` sends what is pending first; ``abort`` drops it, as the transport would."""

    __slots__ = ("_transport", "_loop", "_pending")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self._flush)
        else:
            self._pending.append(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending:
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        pending = sum(map(len, self._pending)) if self._pending else 0
        return pending + self._transport.get_write_buffer_size()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class EdgeHttpProtocol(HttpToolsProtocol):
    """Also tells the app when a client disconnects while its response is incomplete: the
    scope's ``DISCONNECT_HOOK`` (``Request.until_disconnect``) is called, so a request waiting
    for its answer is cancelled at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # the loop's TCP transport; _Coalescing is a Transport by its methods (its own, the rest delegated)
        coalescing = _Coalescing(cast(asyncio.Transport, transport), self.loop)
        super().connection_made(cast(asyncio.Transport, coalescing))

    def connection_lost(self, exc: Exception | None) -> None:
        cycle = self.cycle
        super().connection_lost(exc)
        if cycle is not None and not cycle.response_complete:
            hook = cycle.scope.get(DISCONNECT_HOOK)
            if callable(hook):
                hook()
