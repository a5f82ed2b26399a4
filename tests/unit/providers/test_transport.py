"""The HTTP port: line splitting, and what each transport does on the wire."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest

from services.contracts.errors import ProviderError, ProviderTimeout
from services.executor.providers.h1 import H1Transport, UpstreamConnectionError
from services.executor.providers.registry import adapters
from services.executor.providers.transport import AiohttpTransport, HttpxTransport, split_lines

from .fixtures import FIXTURES, TEXT
from .support import answer, chat, collect, deployment, joined, raising, streamed
from .upstreams import LIVE_TRANSPORTS, LiveUpstream, Upstream

ADAPTERS = adapters("chat")

#: What each real transport's refused connection is, underneath the ``ProviderError``.
REFUSED = {AiohttpTransport: aiohttp.ClientConnectorError, H1Transport: UpstreamConnectionError}


async def pieces(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def lines_of(*chunks: bytes) -> list[str]:
    return [line async for line in split_lines(pieces(*chunks))]


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ((b"a\nb\n",), ["a", "b"]),
        ((b"a\r\n\r\nb",), ["a", "", "b"]),
        ((b"a\r", b"\nb"), ["a", "b"]),
        ((b"", b"a", b"", b"b\n", b""), ["ab"]),
        ((b"\n\n",), ["", ""]),
        ((b"x\ry\n",), ["x\ry"]),  # only a CR ending a line is dropped
        (("é".encode()[:1], "é".encode()[1:] + b"\n"), ["é"]),
        ((b"\xff\n",), ["\ufffd"]),
        (("a\u2028b\n".encode(),), ["a\u2028b"]),  # JSON may carry U+2028 raw: not a line break
        ((), []),
    ],
)
async def test_split_lines(chunks: tuple[bytes, ...], expected: list[str]) -> None:
    assert await lines_of(*chunks) == expected


async def test_split_lines_joins_a_line_cut_into_many_pieces() -> None:
    line = b"y" * 100_000
    cut = [line[i : i + 10] for i in range(0, len(line), 10)]
    assert await lines_of(b"a\n", *cut, b"\nb") == ["a", line.decode(), "b"]


async def test_status_and_body_pass_through_and_redirects_are_not_followed(upstream: Upstream) -> None:
    http, rec = upstream.serve(
        lambda request: httpx.Response(307, headers={"location": "/other"}, content=b"moved")
    )
    url = upstream.base_url("http://x.test/a")
    assert await http.post_json(url, {"content-type": "application/json", "x-k": "v"}, b'{"a":1}', None) == (
        307,
        b"moved",
    )
    assert len(rec.requests) == 1
    assert rec.request.headers["x-k"] == "v" and rec.request.content == b'{"a":1}'


# --- the real transports ---------------------------------------------------------------


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("transport", sorted(LIVE_TRANSPORTS))
@pytest.mark.parametrize("kind", sorted(ADAPTERS))
async def test_connection_refused_is_a_provider_error(kind: str, transport: str) -> None:
    fx = FIXTURES[kind]
    dep = deployment(kind, f"http://127.0.0.1:{closed_port()}", fx.UPSTREAM_MODEL)
    real = LIVE_TRANSPORTS[transport]
    async with real() as http:
        with pytest.raises(ProviderError) as whole:
            await ADAPTERS[kind].complete(http, chat(), dep, None)
        with pytest.raises(ProviderError) as streamed_err:
            await collect(ADAPTERS[kind].stream(http, chat(), dep, None))
    for err in (whole.value, streamed_err.value):
        assert type(err) is ProviderError
        assert err.details == {"upstream_status": None}
        assert isinstance(err.__cause__, REFUSED[real])


@pytest.mark.parametrize("transport", sorted(LIVE_TRANSPORTS))
async def test_an_answer_that_is_not_http_is_a_provider_error(transport: str) -> None:
    async def babble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(babble, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    fx = FIXTURES["openai"]
    try:
        async with LIVE_TRANSPORTS[transport]() as http:
            with pytest.raises(ProviderError) as err:
                await ADAPTERS["openai"].complete(
                    http, chat(), deployment("openai", f"http://127.0.0.1:{port}", fx.UPSTREAM_MODEL), None
                )
    finally:
        server.close()
        await server.wait_closed()
    assert err.value.details == {"upstream_status": None}


async def test_a_per_call_timeout_overrides_the_default(live_upstream: LiveUpstream) -> None:
    live_upstream.serve(raising(httpx.ReadTimeout))
    async with live_upstream.transport() as http:  # default read timeout: 600 s
        with pytest.raises(TimeoutError):
            await http.post_json(live_upstream.origin + "/x", {}, b"{}", 0.1)
        with pytest.raises(TimeoutError):
            async with http.stream_lines(live_upstream.origin + "/x", {}, b"{}", 0.1) as reply:
                await reply.read()


async def test_connections_are_reused(live_upstream: LiveUpstream) -> None:
    fx = FIXTURES["openai"]
    dep = deployment("openai", live_upstream.base_url(fx.BASE_URL), fx.UPSTREAM_MODEL)
    adapter = ADAPTERS["openai"]
    whole = answer(200, fx.TEXT_COMPLETION)
    pieces = streamed(fx.TEXT_STREAM, fx.STREAM_CONTENT_TYPE, piece=100)
    error = answer(429, fx.ERRORS[429][0])
    replies = iter([whole, error, pieces, whole, pieces])
    http, _ = live_upstream.serve(lambda request: next(replies)(request))
    assert (await adapter.complete(http, chat(), dep, None)).message.content == TEXT
    with pytest.raises(ProviderError):
        await adapter.complete(http, chat(), dep, None)
    assert joined(await collect(adapter.stream(http, chat(), dep, None))) == TEXT
    assert (await adapter.complete(http, chat(), dep, None)).message.content == TEXT
    assert joined(await collect(adapter.stream(http, chat(), dep, None))) == TEXT
    assert len(live_upstream.peers) == 1


async def test_a_stream_left_early_frees_its_connection(live_upstream: LiveUpstream) -> None:
    fx = FIXTURES["openai"]
    dep = deployment("openai", live_upstream.base_url(fx.BASE_URL), fx.UPSTREAM_MODEL)
    adapter = ADAPTERS["openai"]
    http, _ = live_upstream.serve(streamed(fx.TEXT_STREAM, fx.STREAM_CONTENT_TYPE, piece=50))
    stream = adapter.stream(http, chat(), dep, None)
    assert (await anext(stream)) is not None
    await stream.aclose()
    assert joined(await collect(adapter.stream(http, chat(), dep, None))) == TEXT


async def test_stall_mid_stream_honours_the_read_timeout(live_upstream: LiveUpstream) -> None:
    fx = FIXTURES["ollama"]
    dep = deployment("ollama", live_upstream.base_url(fx.BASE_URL), fx.UPSTREAM_MODEL)
    half = fx.TEXT_STREAM[: len(fx.TEXT_STREAM) // 2]
    http, _ = live_upstream.serve(streamed(half, fx.STREAM_CONTENT_TYPE, then=httpx.ReadTimeout("stall")))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(ProviderTimeout):
        await collect(ADAPTERS["ollama"].stream(http, chat(), dep, None))
    assert 0.15 <= loop.time() - t0 < 2


@pytest.mark.parametrize("transport", sorted(LIVE_TRANSPORTS))
async def test_real_transport_lifecycle(transport: str) -> None:
    http = LIVE_TRANSPORTS[transport]()
    await http.aclose()  # never used: nothing to close
    with pytest.raises(RuntimeError, match="closed"):
        await http.post_json("http://127.0.0.1:1/", {}, b"", None)


def test_default_timeouts_match_the_previous_client() -> None:
    # 600 s between bytes, 10 s to connect, no cap on a whole call: aiohttp's default
    # total of 5 minutes would cut long generations.
    assert AiohttpTransport()._timeout == aiohttp.ClientTimeout(total=None, connect=10.0, sock_read=600.0)
    assert HttpxTransport().client.timeout == httpx.Timeout(600.0, connect=10.0)


async def test_httpx_transport_per_call_timeout_keeps_the_connect_timeout(mock_http) -> None:
    http, rec = mock_http(answer(200, b"{}"))
    await http.post_json("http://x.test/", {}, b"{}", 0.5)
    await http.post_json("http://x.test/", {}, b"{}", None)
    assert [r.extensions["timeout"] for r in rec.requests] == [
        {"connect": 5.0, "read": 0.5, "write": 0.5, "pool": 0.5},
        {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0},  # the client's own (httpx's default)
    ]
