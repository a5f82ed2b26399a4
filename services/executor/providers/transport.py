"""The HTTP port the adapters post through, and its one implementation, ``AiohttpTransport``.

Every provider call goes through one pooled ``aiohttp.ClientSession`` (the executor builds it
from ``Settings``: ``services.executor.app._transport``). The adapters see only the
``HttpTransport`` Protocol, so a test may drive them through any object that implements it.

The transport leaves aiohttp's exceptions alone: ``map_http_errors`` translates them at the
adapter boundary (STYLE 13). Streamed bodies are split with ``split_lines``.
"""

from __future__ import annotations

import contextlib
import ssl
import sys
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import aiohttp
import certifi

#: The longest wait for the next bytes of an answer, and for a connection (a free one from
#: the pool, DNS, TCP and TLS).
READ_TIMEOUT_S = 600.0
CONNECT_TIMEOUT_S = 10.0
#: How long an idle pooled connection is kept for reuse.
KEEPALIVE_S = 30.0
#: The most connections open to providers at once (all hosts together).
MAX_CONNECTIONS = 512

# CPython leaked aborted SSL transports before python/cpython#118960 (3.12.8, 3.13.1);
# aiohttp's clean-up works around it and warns when asked for it on a fixed version.
_SSL_TRANSPORTS_LEAK = sys.version_info < (3, 12, 8) or (3, 13, 0) <= sys.version_info < (3, 13, 1)


class StreamingReply(Protocol):
    """An answer whose body is still arriving: its status and headers (looked up
    case-insensitively; the executor reads ``Retry-After`` / ``retry-after-ms`` from them)."""

    status: int
    headers: Mapping[str, str]

    async def read(self) -> bytes:
        """The whole remaining body (for error answers)."""
        ...

    def lines(self) -> AsyncIterator[str]:
        """The body as decoded lines: split on ``\\n``, a trailing ``\\r`` removed, a last
        unterminated line included. Lines may be of any length."""
        ...


class HttpTransport(Protocol):
    """POSTs a JSON body to a provider. ``timeout_s`` bounds each wait for the answer's
    next bytes (``None``: the transport's default); connecting has its own bound. Only the
    executor's own deadlines limit a call's total duration. Redirects are not followed."""

    async def post_json(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float | None
    ) -> tuple[int, bytes]:
        """``(status, whole body)``."""
        ...

    def stream_lines(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float | None
    ) -> AbstractAsyncContextManager[StreamingReply]:
        """The reply once its status is known; leaving the context releases the connection
        (closing it if the body was not read to the end)."""
        ...

    async def aclose(self) -> None: ...


async def split_lines(chunks: AsyncIterable[bytes]) -> AsyncIterator[str]:
    """Re-cut a body that arrives in arbitrary pieces into lines (see ``StreamingReply.lines``).

    Splitting bytes on ``\\n`` is safe for UTF-8, which never uses that byte inside a
    multi-byte character; undecodable bytes become U+FFFD."""
    pending: list[bytes] = []
    async for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            if pending:
                pending.append(chunk[start:end])
                line = b"".join(pending)
                pending.clear()
            else:
                line = chunk[start:end]
            yield _decode(line)
            start = end + 1
        if start < len(chunk):
            pending.append(chunk[start:])
    if pending:
        yield _decode(b"".join(pending))


def _decode(line: bytes) -> str:
    if line.endswith(b"\r"):
        line = line[:-1]
    return line.decode("utf-8", "replace")


# --- aiohttp -----------------------------------------------------------------------


class AiohttpStreamingReply:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        return await self._response.read()

    def lines(self) -> AsyncIterator[str]:
        # Not ``async for line in response.content``: its readline refuses lines longer
        # than twice the read buffer (128 KiB in aiohttp 3.9, 512 KiB in 3.14), and one
        # SSE event (a large tool call) can be longer.
        return split_lines(self._response.content.iter_any())

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as raw bytes, in the pieces it arrives in (binary streams: audio)."""
        return self._response.content.iter_any()


class AiohttpTransport:
    """One ``aiohttp.ClientSession``, created on first use (it must be made inside the
    running loop) and closed by ``aclose``.

    * **Pool**: at most ``max_connections`` connections at once, all hosts together; a call
      finding them all busy waits for one, and that wait counts against ``connect_timeout_s``
      (then it fails as a timeout). Idle connections are kept ``keepalive_s``.
    * **Proxies**: with ``trust_env``, aiohttp's own reading of ``HTTP_PROXY`` /
      ``HTTPS_PROXY`` / ``NO_PROXY`` (and ``.netrc`` credentials) for every call (it costs two
      thread hops per call); without, every call goes straight to its URL.
    * No cookies are kept; redirects are not followed; TLS verifies against certifi's roots.
    """

    def __init__(
        self,
        *,
        read_timeout_s: float = READ_TIMEOUT_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        keepalive_s: float = KEEPALIVE_S,
        max_connections: int = MAX_CONNECTIONS,
        trust_env: bool = False,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections}")
        self._trust_env = trust_env
        self._connect_timeout_s = connect_timeout_s
        self._keepalive_s = keepalive_s
        self.max_connections = max_connections
        self._timeout = self._timeout_for(read_timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _timeout_for(self, read_timeout_s: float) -> aiohttp.ClientTimeout:
        # ``connect`` covers the wait for a pooled connection, DNS, TCP and TLS; ``total``
        # must be unset, aiohttp's default would cut every call at 5 minutes.
        return aiohttp.ClientTimeout(total=None, connect=self._connect_timeout_s, sock_read=read_timeout_s)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            if self._closed:
                raise RuntimeError("AiohttpTransport is closed")
            connector = aiohttp.TCPConnector(
                limit=self.max_connections,
                keepalive_timeout=self._keepalive_s,
                enable_cleanup_closed=_SSL_TRANSPORTS_LEAK,
                ssl=ssl.create_default_context(cafile=certifi.where()),
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=self._timeout,
                auto_decompress=True,
                trust_env=self._trust_env,
            )
        return self._session

    def _timeout_arg(self, timeout_s: float | None) -> aiohttp.ClientTimeout:
        return self._timeout if timeout_s is None else self._timeout_for(timeout_s)

    async def post_json(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float | None
    ) -> tuple[int, bytes]:
        async with self._client().post(
            url, data=body, headers=headers, timeout=self._timeout_arg(timeout_s), allow_redirects=False
        ) as response:
            return response.status, await response.read()

    @contextlib.asynccontextmanager
    async def stream_lines(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float | None
    ) -> AsyncIterator[StreamingReply]:
        async with self._client().post(
            url, data=body, headers=headers, timeout=self._timeout_arg(timeout_s), allow_redirects=False
        ) as response:
            yield AiohttpStreamingReply(response)

    async def get(self, url: str, headers: Mapping[str, str], timeout_s: float | None) -> tuple[int, bytes]:
        """GET ``url``: ``(status, whole body)``; a URL a provider answered with (its generated
        images), never a caller's (those go through the media-store's SafeFetcher)."""
        async with self._client().get(
            url, headers=headers, timeout=self._timeout_arg(timeout_s), allow_redirects=False
        ) as response:
            return response.status, await response.read()

    async def get_reply(
        self, url: str, headers: Mapping[str, str], timeout_s: float | None
    ) -> tuple[int, Mapping[str, str], bytes]:
        """``get`` with the response's headers (``media_base.HeadedDownloads``)."""
        async with self._client().get(
            url, headers=headers, timeout=self._timeout_arg(timeout_s), allow_redirects=False
        ) as response:
            return response.status, response.headers.copy(), await response.read()

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> AiohttpTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
