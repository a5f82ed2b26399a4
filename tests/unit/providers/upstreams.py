"""Fake upstreams that serve the same ``Handler``s through either transport.

``MockUpstream`` answers in-process through ``httpx.MockTransport`` behind an
``HttpxTransport``: no network. ``LiveUpstream`` is a real HTTP server on a free local
port, reached through a real transport (``AiohttpTransport`` or ``H1Transport``); it acts a handler's failures out on the
wire: an ``httpx.TimeoutException`` (raised before the answer or by its body) makes it
stall until the client gives up, any other exception makes it drop the connection.
Streamed bodies are written and flushed piece by piece, so the client receives them in
separate TCP segments.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import NoReturn, Protocol
from urllib.parse import urlsplit

import httpx
from aiohttp import web
from aiohttp.test_utils import RawTestServer

from services.executor.providers.h1 import H1Transport
from services.executor.providers.transport import AiohttpTransport, HttpTransport, HttpxTransport

from .support import Handler, Recorder

#: Headers the server sets itself from the body it writes.
_FRAMING = {"content-length", "transfer-encoding", "connection"}
#: The live transport's read timeout: a stalled upstream fails a test this fast.
LIVE_READ_TIMEOUT_S = 0.2


class Upstream(Protocol):
    def serve(self, respond: Handler) -> tuple[HttpTransport, Recorder]:
        """A transport whose requests ``respond`` answers, and the recorder of those requests."""
        ...

    def base_url(self, configured: str) -> str:
        """The base URL a deployment configured with ``configured`` must use to reach this upstream
        (the same path on this upstream's origin)."""
        ...


class MockUpstream:
    def __init__(self) -> None:
        self._transports: list[HttpTransport] = []

    def serve(self, respond: Handler) -> tuple[HttpTransport, Recorder]:
        recorder = Recorder(respond)
        http = HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(recorder)))
        self._transports.append(http)
        return http, recorder

    def base_url(self, configured: str) -> str:
        return configured

    async def aclose(self) -> None:
        for http in self._transports:
            await http.aclose()


#: The real transports a ``LiveUpstream`` can be reached through, by name.
LIVE_TRANSPORTS: dict[str, type[AiohttpTransport] | type[H1Transport]] = {
    "aiohttp": AiohttpTransport,
    "h1": H1Transport,
}


class LiveUpstream:
    def __init__(self, read_timeout_s: float = LIVE_READ_TIMEOUT_S, transport: str = "aiohttp") -> None:
        self._read_timeout_s = read_timeout_s
        self.transport = LIVE_TRANSPORTS[transport]
        # handler_cancellation: a stalled handler ends when its client hangs up.
        self._server = RawTestServer(self._handle, host="127.0.0.1")
        self._respond: Handler | None = None
        self._transports: list[HttpTransport] = []
        #: The client ends of the connections answers went out on.
        self.peers: set[object] = set()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._server.port}"

    async def start(self) -> None:
        await self._server.start_server()

    def serve(self, respond: Handler) -> tuple[HttpTransport, Recorder]:
        recorder = Recorder(respond)
        self._respond = recorder
        http = self.transport(read_timeout_s=self._read_timeout_s)
        self._transports.append(http)
        return http, recorder

    def base_url(self, configured: str) -> str:
        return self.origin + urlsplit(configured).path

    async def aclose(self) -> None:
        for http in self._transports:
            await http.aclose()
        await self._server.close()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        assert self._respond is not None, "serve() a handler first"
        assert request.transport is not None
        self.peers.add(request.transport.get_extra_info("peername"))
        sent = httpx.Request(
            request.method,
            str(request.url),
            headers=list(request.headers.items()),
            content=await request.read(),
        )
        try:
            reply = self._respond(sent)
        except httpx.TimeoutException:
            await _stall()
        except Exception:
            return _drop(request)
        headers = {k: v for k, v in reply.headers.items() if k.lower() not in _FRAMING}
        with contextlib.suppress(httpx.ResponseNotRead):
            return web.Response(status=reply.status_code, body=reply.content, headers=headers)
        response = web.StreamResponse(status=reply.status_code, headers=headers)
        await response.prepare(request)
        try:
            async for piece in reply.aiter_raw():
                await response.write(piece)
                await asyncio.sleep(0)  # let the client read this piece before the next is written
        except httpx.TimeoutException:
            await _stall()
        except Exception:
            return _drop(request, response)
        await response.write_eof()
        return response


async def _stall() -> NoReturn:
    """Say nothing more until the client hangs up (which cancels this handler)."""
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def _drop(request: web.BaseRequest, response: web.StreamResponse | None = None) -> web.StreamResponse:
    """Cut the connection without finishing the answer."""
    request.transport.abort()  # type: ignore[union-attr]
    return response or web.Response()
