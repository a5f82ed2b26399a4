"""``H1Transport`` on the wire: what it sends, and the answers and failures a real server can give.

The adapter-level behaviour (every adapter's requests, answers, errors and streams) runs
over ``H1Transport`` through the ``upstream`` and ``live_upstream`` fixtures; these tests
cover what only a hand-written server can make happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme
from aiohttp import web

from services.contracts.errors import ProviderError
from services.executor.providers.base import map_http_errors
from services.executor.providers.h1 import (
    STREAM_BUFFER_BYTES,
    H1Transport,
    UpstreamConnectionError,
    _Connection,
)

Reply = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A TCP server that reads each HTTP request (head and ``content-length`` body) and
    lets ``reply`` write whatever bytes it likes. Records requests and connections."""

    def __init__(self, reply: Reply) -> None:
        self._reply = reply
        self.requests: list[bytes] = []
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1/x?a=1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            while not writer.is_closing():
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                await self._reply(request, writer)
        writer.close()


def answer(body: bytes, *extra: bytes, status: bytes = b"200 OK") -> Reply:
    async def reply(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 "
            + status
            + b"\r\ncontent-length: %d\r\n" % len(body)
            + b"".join(extra)
            + b"\r\n"
            + body
        )
        await writer.drain()

    return reply


async def test_the_request_on_the_wire() -> None:
    async with RawServer(answer(b"{}")) as server, H1Transport() as http:
        headers = {
            "content-type": "application/json",
            "x-api-key": "k",
            "Content-Length": "999",
            "connection": "x",
        }
        assert await http.post_json(server.url, headers, b'{"a":1}', None) == (200, b"{}")
        port = server.url.split(":")[2].split("/")[0]
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/x?a=1 HTTP/1.1"
    assert sorted(lines[1:]) == sorted(
        [
            f"host: 127.0.0.1:{port}".encode(),
            b"content-length: 7",  # the transport frames the body; the caller's framing headers are dropped
            b"content-type: application/json",
            b"x-api-key: k",
            b"user-agent: llmgw",
            b"accept-encoding: gzip",
        ]
    )
    assert body == b'{"a":1}'


async def test_one_connection_serves_consecutive_calls() -> None:
    async with RawServer(answer(b"ok")) as server, H1Transport() as http:
        for _ in range(3):
            assert await http.post_json(server.url, {}, b"", None) == (200, b"ok")
    assert server.connections == 1 and len(server.requests) == 3


async def test_connection_close_and_keepalive_expiry_open_new_connections() -> None:
    async with RawServer(answer(b"ok", b"connection: close\r\n")) as server, H1Transport() as http:
        for _ in range(2):
            assert await http.post_json(server.url, {}, b"", None) == (200, b"ok")
    assert server.connections == 2
    async with RawServer(answer(b"ok")) as server, H1Transport(keepalive_s=0) as http:
        for _ in range(2):
            assert await http.post_json(server.url, {}, b"", None) == (200, b"ok")
    assert server.connections == 2


async def test_a_connection_the_server_closed_while_idle_is_not_reused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lost = asyncio.Event()
    connection_lost = _Connection.connection_lost

    def noting(self: _Connection, exc: Exception | None) -> None:
        connection_lost(self, exc)
        lost.set()

    monkeypatch.setattr(_Connection, "connection_lost", noting)

    async def once(request: bytes, writer: asyncio.StreamWriter) -> None:
        await answer(b"ok")(request, writer)
        writer.close()  # no "connection: close": the client learns it from the socket

    async with RawServer(once) as server, H1Transport() as http:
        assert await http.post_json(server.url, {}, b"", None) == (200, b"ok")
        await lost.wait()  # the pooled connection saw the server close it
        assert await http.post_json(server.url, {}, b"", None) == (200, b"ok")
    assert server.connections == 2


async def test_interim_answers_are_skipped() -> None:
    async def hints(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n")
        await answer(b"real")(request, writer)

    async with RawServer(hints) as server, H1Transport() as http:
        assert await http.post_json(server.url, {}, b"", None) == (200, b"real")
        assert await http.post_json(server.url, {}, b"", None) == (200, b"real")


async def test_a_body_without_length_ends_when_the_server_closes() -> None:
    async def until_eof(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\npart one, ")
        await writer.drain()
        writer.write(b"part two")
        writer.close()

    async with RawServer(until_eof) as server, H1Transport() as http:
        assert await http.post_json(server.url, {}, b"", None) == (200, b"part one, part two")
        async with http.stream_lines(server.url, {}, b"", None) as reply:
            assert [line async for line in reply.lines()] == ["part one, part two"]


async def test_chunked_and_gzip_bodies_are_decoded() -> None:
    text = b"data: one\n\ndata: two\n\n" * 50
    packed = gzip.compress(text)

    async def chunked_gzip(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-encoding: gzip\r\n\r\n")
        for i in range(0, len(packed), 7):
            piece = packed[i : i + 7]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")

    async with RawServer(chunked_gzip) as server, H1Transport() as http:
        assert await http.post_json(server.url, {}, b"", None) == (200, text)
        async with http.stream_lines(server.url, {}, b"", None) as reply:
            assert [line async for line in reply.lines()] == text.decode().split("\n")[:-1]
    assert server.connections == 1  # both answers were read to their end: the connection was reused


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (answer(b"x", b"content-encoding: br\r\n"), "unsupported content-encoding"),
        (answer(b"not gzip at all", b"content-encoding: gzip\r\n"), "malformed gzip"),
        (answer(b"", status=b"200 OK\r\ncontent-length: x"), "malformed HTTP"),
    ],
)
async def test_unreadable_answers_fail_clearly(reply: Reply, match: str) -> None:
    async with RawServer(reply) as server, H1Transport() as http:
        with pytest.raises(UpstreamConnectionError, match=match):
            await http.post_json(server.url, {}, b"", None)
        with pytest.raises(ProviderError, match=match), map_http_errors("p"):
            await http.post_json(server.url, {}, b"", None)


async def test_a_connection_dropped_mid_body_fails_and_is_not_reused() -> None:
    async def half(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
        await writer.drain()
        writer.close()

    async with RawServer(half) as server, H1Transport() as http:
        with pytest.raises(UpstreamConnectionError, match="closed the connection before the answer ended"):
            await http.post_json(server.url, {}, b"", None)
        assert not any(http._idle.values()) and not http._busy  # closed, not pooled


async def test_a_cancelled_call_closes_its_connection() -> None:
    received, release = asyncio.Event(), asyncio.Event()

    async def slow(request: bytes, writer: asyncio.StreamWriter) -> None:
        if len(server.requests) == 1:
            received.set()
            await release.wait()
        await answer(b"ok")(request, writer)

    async with RawServer(slow) as server, H1Transport() as http:
        call = asyncio.create_task(http.post_json(server.url, {}, b"", None))
        await received.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        release.set()
        assert await http.post_json(server.url, {}, b"", None) == (200, b"ok")
    assert server.connections == 2  # the first one's answer was never read: never reused


async def test_a_slow_reader_bounds_what_is_read_ahead() -> None:
    line = b"y" * 1023 + b"\n"
    lines = 8 * 1024  # 8 MiB

    async def flood(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (len(line) * lines))
        for _ in range(lines // 64):
            writer.write(line * 64)
            await writer.drain()

    async with RawServer(flood) as server, H1Transport() as http:
        async with http.stream_lines(server.url, {}, b"", None) as reply:
            conn = reply._conn
            count = peak = 0
            async for _ in reply.lines():
                count += 1
                peak = max(peak, conn._buffered)
                if count % 1024 == 0:
                    await asyncio.sleep(0.01)  # a slow reader: the server keeps writing meanwhile
    assert count == lines
    assert peak <= STREAM_BUFFER_BYTES + 256 * 1024  # paused at the bound, plus at most one socket read


async def test_a_silent_server_times_out() -> None:
    async def silent(request: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.Event().wait()

    async with RawServer(silent) as server, H1Transport() as http:
        with pytest.raises(TimeoutError, match="no answer bytes"):
            await http.post_json(server.url, {}, b"", 0.1)


@pytest.mark.parametrize(
    ("url", "match"),
    [("ftp://h/x", "only http and https"), ("http:///x", "no host"), ("http://h:99999/x", "unsupported URL")],
)
async def test_unusable_urls_are_refused(url: str, match: str) -> None:
    async with H1Transport() as http:
        with pytest.raises(UpstreamConnectionError, match=match):
            await http.post_json(url, {}, b"", None)


async def test_header_injection_is_refused() -> None:
    async with RawServer(answer(b"ok")) as server, H1Transport() as http:
        with pytest.raises(ValueError, match="must not contain CR, LF or NUL"):
            await http.post_json(server.url, {"authorization": "Bearer k\r\nx-evil: 1"}, b"", None)
    assert server.requests == []


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@contextlib.asynccontextmanager
async def tls_server(ca: trustme.CA) -> AsyncIterator[str]:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(body=b'{"tls":true}', content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/x", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    site = web.TCPSite(runner, "localhost", 0, ssl_context=server_ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"https://localhost:{port}/v1/x"
    finally:
        await runner.cleanup()


async def test_tls_verifies_the_server(ca: trustme.CA) -> None:
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    async with tls_server(ca) as url:
        async with H1Transport(ssl_context=trusting) as http:
            assert await http.post_json(url, {}, b"{}", None) == (200, b'{"tls":true}')
            assert await http.post_json(url, {}, b"{}", None) == (200, b'{"tls":true}')
        async with H1Transport() as http:  # certifi's roots do not know this CA
            with pytest.raises(UpstreamConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.post_json(url, {}, b"{}", None)
