"""The HTTP port: line splitting, and what ``AiohttpTransport`` does on the wire: timeouts,
connection reuse, the pool's bound, proxies."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest

from services.contracts.errors import ProviderError, ProviderTimeout
from services.executor.providers.registry import adapters
from services.executor.providers.transport import AiohttpTransport, split_lines
from tests.support import eventually

from .fixtures import FIXTURES, TEXT
from .support import answer, chat, collect, deployment, joined, raising, streamed
from .upstreams import LiveUpstream, Upstream

ADAPTERS = adapters("chat")
PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY")


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


# --- on the wire ---------------------------------------------------------------------------


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("kind", sorted(ADAPTERS))
async def test_connection_refused_is_a_provider_error(kind: str) -> None:
    fx = FIXTURES[kind]
    dep = deployment(kind, f"http://127.0.0.1:{closed_port()}", fx.UPSTREAM_MODEL)
    async with AiohttpTransport() as http:
        with pytest.raises(ProviderError) as whole:
            await ADAPTERS[kind].complete(http, chat(), dep, None)
        with pytest.raises(ProviderError) as streamed_err:
            await collect(ADAPTERS[kind].stream(http, chat(), dep, None))
    for err in (whole.value, streamed_err.value):
        assert type(err) is ProviderError
        assert err.details == {"upstream_status": None}
        assert isinstance(err.__cause__, aiohttp.ClientConnectorError)


async def test_an_answer_that_is_not_http_is_a_provider_error() -> None:
    async def babble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(babble, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    fx = FIXTURES["openai"]
    try:
        async with AiohttpTransport() as http:
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
    async with AiohttpTransport() as http:  # default read timeout: 600 s
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


async def test_transport_lifecycle() -> None:
    http = AiohttpTransport()
    await http.aclose()  # never used: nothing to close
    with pytest.raises(RuntimeError, match="closed"):
        await http.post_json("http://127.0.0.1:1/", {}, b"", None)


def test_default_timeouts_and_pool() -> None:
    # 600 s between bytes, 10 s to connect, no cap on a whole call: aiohttp's default
    # total of 5 minutes would cut long generations.
    http = AiohttpTransport()
    assert http._timeout == aiohttp.ClientTimeout(total=None, connect=10.0, sock_read=600.0)
    assert http.max_connections == 512
    with pytest.raises(ValueError, match="max_connections must be at least 1, not 0"):
        AiohttpTransport(max_connections=0)


async def held_until(release: asyncio.Event) -> AsyncIterator[bytes]:
    yield b"{"
    await release.wait()
    yield b"}"


async def test_the_pool_is_bounded_and_a_call_waits_for_a_free_connection(
    live_upstream: LiveUpstream,
) -> None:
    """With one connection allowed and it busy, a second call waits for it, for at most the
    connect timeout; once the first call is done the next one reuses its connection."""
    release = asyncio.Event()
    _, rec = live_upstream.serve(lambda request: httpx.Response(200, content=held_until(release)))
    url = live_upstream.origin + "/v1/x"
    async with AiohttpTransport(max_connections=1, connect_timeout_s=0.3) as http:
        first = asyncio.create_task(http.post_json(url, {}, b"{}", None))
        await eventually(lambda: len(rec.requests) == 1, within=5)
        async with asyncio.timeout(5):  # an unbounded pool would send it, and it would hang
            with pytest.raises(aiohttp.ConnectionTimeoutError):
                await http.post_json(url, {}, b"{}", None)
        assert len(rec.requests) == 1
        release.set()
        assert await first == (200, b"{}")
        assert await http.post_json(url, {}, b"{}", None) == (200, b"{}")
    assert len(rec.requests) == 2 and len(live_upstream.peers) == 1


@pytest.fixture
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


async def test_with_trust_env_calls_go_through_the_proxy_the_environment_names(
    live_upstream: LiveUpstream, no_proxy_variables: pytest.MonkeyPatch
) -> None:
    """The proxy (here the live upstream, answering as a forward proxy would) gets the request
    with the provider's absolute URL; no DNS lookup of the provider happens here."""
    _, rec = live_upstream.serve(answer(200, b'{"via": "proxy"}'))
    no_proxy_variables.setenv("HTTP_PROXY", live_upstream.origin)
    async with AiohttpTransport(trust_env=True) as http:
        assert await http.post_json("http://provider.test/v1/x", {}, b"{}", None) == (
            200,
            b'{"via": "proxy"}',
        )
        async with http.stream_lines("http://provider.test/v1/y", {}, b"{}", None) as reply:
            assert reply.status == 200
    assert [str(r.url) for r in rec.requests] == ["http://provider.test/v1/x", "http://provider.test/v1/y"]


async def test_no_proxy_and_the_default_go_straight_to_the_provider(
    live_upstream: LiveUpstream, no_proxy_variables: pytest.MonkeyPatch
) -> None:
    _, rec = live_upstream.serve(answer(200, b"{}"))
    no_proxy_variables.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")  # would refuse
    url = live_upstream.origin + "/v1/x"
    async with AiohttpTransport() as http:  # trust_env off: the variables are not read
        assert (await http.post_json(url, {}, b"{}", None))[0] == 200
    no_proxy_variables.setenv("NO_PROXY", "127.0.0.1")
    async with AiohttpTransport(trust_env=True) as http:
        assert (await http.post_json(url, {}, b"{}", None))[0] == 200
    assert len(rec.requests) == 2
