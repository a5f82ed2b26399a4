"""``H1Transport``: the executor's provider client, HTTP/1.1 with a keep-alive pool.

Why not aiohttp for every call: on this project's 2-core benchmark machine one pooled
``aiohttp`` POST costs 195-234 us of CPU, and the executor makes one per request; this
client, an ``asyncio.Protocol`` around ``httptools`` (uvicorn's parser), costs 65-79 us
(``python -m bench.http_client``). The executor needs one narrow thing from HTTP — POST a
body, read a status and a (possibly streamed) body — and this module does only that.
Proxies are not supported here: with ``LLMGW_PROVIDER_TRUST_ENV=1`` the executor uses
``AiohttpTransport`` instead.

What it does:

* One pool of idle connections per origin (scheme, host, port), reused newest first; a
  connection idle longer than ``keepalive_s`` or closed by the server is not reused.
  A connection goes back to the pool only after a complete answer that allows keep-alive;
  one left mid-answer (a stream left early, a cancelled call, an error) is closed.
* Timeouts as ``AiohttpTransport``: ``connect_timeout_s`` for TCP and TLS, ``timeout_s``
  (default ``read_timeout_s``) for each wait for the answer's next bytes, no total cap.
* TLS verifies against certifi's roots, with SNI.
* ``Accept-Encoding: gzip``; a gzip body is decompressed. Chunked and length-delimited
  bodies, bodies that end when the server closes, and interim 1xx answers are handled.
* A streamed body is read in arrival order; reading from the socket pauses while more
  than ``STREAM_BUFFER_BYTES`` wait for the reader.

Failures raise ``UpstreamConnectionError`` (refused, reset, closed mid-answer, not HTTP,
bad gzip, unsupported URL) or ``TimeoutError``; ``map_http_errors`` translates both.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import zlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import urlsplit

import certifi
import httptools

from .transport import CONNECT_TIMEOUT_S, KEEPALIVE_S, READ_TIMEOUT_S, split_lines

#: Bytes of a streamed body read ahead of its reader before reading from the socket pauses.
STREAM_BUFFER_BYTES = 1024 * 1024
USER_AGENT = "llmgw"


class UpstreamConnectionError(Exception):
    """The exchange with a provider failed below HTTP status level."""


class _Origin(NamedTuple):
    scheme: str
    host: str
    port: int


class _Target(NamedTuple):
    origin: _Origin
    head: bytes  # request line and the Host header


@lru_cache(maxsize=1024)
def _target(url: str) -> _Target:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UpstreamConnectionError(f"unsupported URL {url!r}: only http and https are")
    host = parts.hostname
    if not host:
        raise UpstreamConnectionError(f"unsupported URL {url!r}: no host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise UpstreamConnectionError(f"unsupported URL {url!r}: {exc}") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    default = (scheme, port) in (("http", 80), ("https", 443))
    name = f"[{host}]" if ":" in host else host
    authority = name if default else f"{name}:{port}"
    _check(path, "URL path")
    head = f"POST {path} HTTP/1.1\r\nhost: {authority}\r\n".encode()
    return _Target(_Origin(scheme, host, port), head)


def _check(value: str, what: str) -> None:
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"{what} must not contain CR, LF or NUL: {value[:100]!r}")


def _request(target: _Target, headers: Mapping[str, str], body: bytes) -> bytes:
    lines = [target.head, b"content-length: %d\r\n" % len(body)]
    names = set()
    for name, value in headers.items():
        lower = name.lower()
        names.add(lower)
        if lower in ("host", "content-length", "transfer-encoding", "connection"):
            continue  # the transport frames the request itself
        _check(name, "header name")
        _check(value, f"header {name}")
        lines.append(f"{name}: {value}\r\n".encode())
    if "user-agent" not in names:
        lines.append(b"user-agent: " + USER_AGENT.encode() + b"\r\n")
    if "accept-encoding" not in names:
        lines.append(b"accept-encoding: gzip\r\n")
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one exchange at a time, its answer parsed as it arrives."""

    def __init__(self, origin: _Origin) -> None:
        self.origin = origin
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.lost = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self._interim = False
        self._until_eof = True
        self._encoding: bytes | None = None
        self._decoder: zlib._Decompress | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    # --- the exchange -----------------------------------------------------------------

    def send(self, request: bytes) -> None:
        self._reset()
        if self.lost or self._transport is None:
            raise UpstreamConnectionError(f"the connection to {self.origin.host} is closed")
        self._transport.write(request)

    async def wait(self, timeout_s: float) -> None:
        """Until the answer moves on (headers, body bytes, the end) or fails; ``TimeoutError``
        if nothing arrives for ``timeout_s``."""
        if self._error is not None:
            raise self._error
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_later(timeout_s, self._stalled, waiter, timeout_s)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def head(self, timeout_s: float) -> int:
        while not self.headers_done:
            await self.wait(timeout_s)
        return self.status

    def take(self) -> bytes:
        """The body bytes that arrived since the last call."""
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        if self._paused and self._transport is not None and not self.lost:
            self._paused = False
            self._transport.resume_reading()
        return data

    async def body(self, timeout_s: float) -> bytes:
        while not self.complete:
            await self.wait(timeout_s)
        return self.take()

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.lost and self._error is None

    def close(self) -> None:
        self.lost = True
        if self._transport is not None:
            self._transport.close()

    def _stalled(self, waiter: asyncio.Future[None], timeout_s: float) -> None:
        if not waiter.done():
            waiter.set_exception(TimeoutError(f"no answer bytes from {self.origin.host} for {timeout_s:g} s"))

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        self.close()

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            # A callback's own error (bad gzip, unsupported encoding) comes wrapped.
            own = exc.__context__ if isinstance(exc, httptools.HttpParserCallbackError) else None
            if isinstance(own, UpstreamConnectionError):
                self._fail(own)
            else:
                self._fail(UpstreamConnectionError(f"malformed HTTP answer from {self.origin.host}: {exc}"))

    def eof_received(self) -> bool:
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.complete:
            return
        if self.headers_done and self._until_eof and exc is None:
            self._finish()  # a body without a length ends when the server closes
            return
        reason = f": {exc}" if exc else ""
        self._fail(
            UpstreamConnectionError(
                f"{self.origin.host} closed the connection before the answer ended{reason}"
            )
        )

    # --- httptools callbacks --------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower == b"content-encoding":
            self._encoding = value.strip().lower()
        elif lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value.lower()):
            self._until_eof = False

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            self._interim = True  # 100 Continue, 103 Early Hints: the real answer follows
            self._encoding = None
            self._until_eof = True
            return
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()
        if status in (204, 304):
            self._until_eof = False
        if self._encoding in (b"gzip", b"x-gzip"):
            self._decoder = zlib.decompressobj(wbits=31)
        elif self._encoding not in (None, b"", b"identity"):
            raise UpstreamConnectionError(
                f"{self.origin.host} answered with unsupported content-encoding {self._encoding!r}"
            )
        self.headers_done = True
        self._wake()

    def on_body(self, data: bytes) -> None:
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error as exc:
                raise UpstreamConnectionError(f"malformed gzip body from {self.origin.host}: {exc}") from None
        if data:
            self._chunks.append(data)
            self._buffered += len(data)
            if self._buffered > STREAM_BUFFER_BYTES and not self._paused and self._transport is not None:
                self._paused = True
                self._transport.pause_reading()
            self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._finish()

    def _finish(self) -> None:
        if self._decoder is not None:
            tail = self._decoder.flush()
            if tail:
                self._chunks.append(tail)
        self.complete = True
        self._wake()


class H1StreamingReply:
    def __init__(self, conn: _Connection, timeout_s: float) -> None:
        self._conn = conn
        self._timeout_s = timeout_s
        self.status = conn.status

    async def read(self) -> bytes:
        return await self._conn.body(self._timeout_s)

    async def _chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            data = conn.take()
            if data:
                yield data
            elif conn.complete:
                return
            else:
                await conn.wait(self._timeout_s)

    def lines(self) -> AsyncIterator[str]:
        return split_lines(self._chunks())


class H1Transport:
    """``HttpTransport`` over pooled HTTP/1.1 connections (see the module's docstring)."""

    def __init__(
        self,
        *,
        read_timeout_s: float = READ_TIMEOUT_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        keepalive_s: float = KEEPALIVE_S,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._read_timeout_s = read_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._keepalive_s = keepalive_s
        self._ssl = ssl_context
        self._idle: dict[_Origin, deque[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._closed = False

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=certifi.where())
        return self._ssl

    async def _acquire(self, origin: _Origin) -> _Connection:
        if self._closed:
            raise RuntimeError("H1Transport is closed")
        conn = self._pooled(origin) or await self._connect(origin)
        self._busy.add(conn)
        return conn

    def _pooled(self, origin: _Origin) -> _Connection | None:
        """The newest idle connection to ``origin`` still open and fresh; stale ones are closed."""
        idle = self._idle.get(origin)
        if idle:
            stale = asyncio.get_running_loop().time() - self._keepalive_s
            while idle:
                conn = idle.pop()
                if not conn.lost and conn.idle_since > stale:
                    return conn
                conn.close()
        return None

    async def _connect(self, origin: _Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = self._tls() if origin.scheme == "https" else None
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(origin),
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
        except OSError as exc:  # refused, unreachable, DNS, TLS verification
            raise UpstreamConnectionError(f"cannot connect to {origin.host}:{origin.port}: {exc}") from exc
        return conn

    def _release(self, conn: _Connection) -> None:
        if self._closed or not conn.reusable():
            self._discard(conn)
            return
        self._busy.discard(conn)
        now = asyncio.get_running_loop().time()
        conn.idle_since = now
        idle = self._idle.setdefault(conn.origin, deque())
        idle.append(conn)
        stale = now - self._keepalive_s
        while idle and (idle[0].lost or idle[0].idle_since <= stale):  # oldest first
            idle.popleft().close()

    def _discard(self, conn: _Connection) -> None:
        self._busy.discard(conn)
        conn.close()

    async def _exchange(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float
    ) -> _Connection:
        target = _target(url)
        request = _request(target, headers, body)
        conn = await self._acquire(target.origin)
        try:
            conn.send(request)
            await conn.head(timeout_s)
        except BaseException:
            self._discard(conn)
            raise
        return conn

    async def post_json(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float | None
    ) -> tuple[int, bytes]:
        timeout = self._read_timeout_s if timeout_s is None else timeout_s
        conn = await self._exchange(url, headers, body, timeout)
        try:
            data = await conn.body(timeout)
        except BaseException:
            self._discard(conn)
            raise
        self._release(conn)
        return conn.status, data

    @contextlib.asynccontextmanager
    async def stream_lines(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float | None
    ) -> AsyncIterator[H1StreamingReply]:
        timeout = self._read_timeout_s if timeout_s is None else timeout_s
        conn = await self._exchange(url, headers, body, timeout)
        try:
            yield H1StreamingReply(conn, timeout)
        except BaseException:
            self._discard(conn)
            raise
        self._release(conn)  # closed unless the body was read to its end

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        for conn in list(self._busy):
            conn.close()
        self._busy.clear()

    async def __aenter__(self) -> H1Transport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
