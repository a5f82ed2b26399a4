"""A fake upstream that serves the tests' ``Handler``s over real HTTP.

``LiveUpstream`` is an aiohttp server on a free local port, reached through the executor's
own transport (``AiohttpTransport``). Handlers speak in ``httpx.Request`` / ``httpx.Response``
(test vocabulary only: no provider call goes through httpx). It acts a handler's failures out
on the wire: an ``httpx.TimeoutException`` (raised before the answer or by its body) makes it
stall until the client gives up, any other exception makes it drop the connection. Streamed
bodies are written and flushed piece by piece, so the client receives them in separate TCP
segments.

``serve(respond, reroute=True)`` is for deployments configured with a provider's own URL
(``https://api.openai.test/v1``): the transport it returns (``Rerouted``) sends every call to
this server instead, and the handler sees the URL the adapter asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import NoReturn, Protocol
from urllib.parse import urlsplit

import httpx
from aiohttp import web
from aiohttp.test_utils import RawTestServer

from services.executor.providers.transport import AiohttpTransport, HttpTransport, StreamingReply

from .support import Handler, Recorder

#: Headers the server sets itself from the body it writes.
_FRAMING = {"content-length", "transfer-encoding", "connection"}
#: The live transport's read timeout: a stalled upstream fails a test this fast.
LIVE_READ_TIMEOUT_S = 0.2
#: Carries the URL a ``Rerouted`` call was meant for.
_MEANT_FOR = "x-test-meant-for"


class Upstream(Protocol):
    def serve(self, respond: Handler, reroute: bool = False) -> tuple[HttpTransport, Recorder]:
        """A transport whose requests ``respond`` answers, and the recorder of those requests
        (``reroute``: whatever URL they name)."""
        ...

    def base_url(self, configured: str) -> str:
        """The base URL a deployment configured with ``configured`` must use to reach this upstream
        (the same path on this upstream's origin)."""
        ...


class LiveUpstream:
    def __init__(self, read_timeout_s: float = LIVE_READ_TIMEOUT_S) -> None:
        self._read_timeout_s = read_timeout_s
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

    def serve(self, respond: Handler, reroute: bool = False) -> tuple[HttpTransport, Recorder]:
        recorder = Recorder(respond)
        self._respond = recorder
        http = AiohttpTransport(read_timeout_s=self._read_timeout_s)
        self._transports.append(http)
        return (Rerouted(http, self.origin) if reroute else http), recorder

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
            request.headers.get(_MEANT_FOR) or str(request.url),
            headers=[(k, v) for k, v in request.headers.items() if k.lower() != _MEANT_FOR],
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


class Rerouted:
    """An ``HttpTransport`` that sends every call to ``origin`` (same path and query), naming
    the URL it was meant for in a header ``LiveUpstream`` reads back."""

    def __init__(self, http: AiohttpTransport, origin: str) -> None:
        self._http, self._origin = http, origin

    def _local(self, url: str, headers: Mapping[str, str]) -> tuple[str, dict[str, str]]:
        parts = urlsplit(url)
        local = self._origin + parts.path + (f"?{parts.query}" if parts.query else "")
        return local, {**headers, _MEANT_FOR: url}

    async def post_json(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float | None
    ) -> tuple[int, bytes]:
        return await self._http.post_json(*self._local(url, headers), body, timeout_s)

    def stream_lines(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float | None
    ) -> AbstractAsyncContextManager[StreamingReply]:
        return self._http.stream_lines(*self._local(url, headers), body, timeout_s)

    async def aclose(self) -> None:
        await self._http.aclose()


async def _stall() -> NoReturn:
    """Say nothing more until the client hangs up (which cancels this handler)."""
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def _drop(request: web.BaseRequest, response: web.StreamResponse | None = None) -> web.StreamResponse:
    """Cut the connection without finishing the answer."""
    request.transport.abort()  # type: ignore[union-attr]
    return response or web.Response()
