"""SafeFetcher against real loopback servers: refused addresses are never connected to
(listeners count accepted connections), redirects are checked hop by hop, bodies are capped,
the deadline holds, nothing of the caller's is forwarded and no secret reaches a message or a log."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import traceback
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from services.contracts.errors import ValidationError
from services.runtime.config import MediaFetchConfig
from services.runtime.media.fetch import USER_AGENT, FetchRefused, SafeFetcher, address_refusal

PUBLIC = "93.184.215.14"  # globally routable; the sandbox refuses connections to it at once
SECRET = "sekrit-signature-value"


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6 = _ipv6_loopback()


# --- servers ----------------------------------------------------------------------------


@dataclass
class Listener:
    """A raw TCP server that counts accepted connections and answers one plain HTTP 200, or
    holds the connection open until ``release`` is set (a server that never answers)."""

    host: str
    hold: bool = False
    accepted: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            if self.hold:
                await self.release.wait()
            else:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def listening(host: str = "127.0.0.1", *, hold: bool = False) -> AsyncIterator[Listener]:
    listener = Listener(host, hold=hold)
    server = await asyncio.start_server(listener._handle, host, 0)
    listener.port = server.sockets[0].getsockname()[1]
    try:
        yield listener
    finally:
        listener.release.set()
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """An aiohttp app on 127.0.0.1; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)  # its lines quote full request URLs
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


class FakeResolver(AbstractResolver):
    """Answers each name from ``answers`` (a list per call: the n-th call gets the n-th list,
    the last repeating) and records every call."""

    def __init__(self, answers: dict[str, Sequence[Sequence[str]]]):
        self.answers = answers
        self.calls: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls.append(host)
        lists = self.answers[host]
        seen = self.calls.count(host)
        addresses = lists[min(seen, len(lists)) - 1]
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        pass


@asynccontextmanager
async def fetcher(
    *,
    allow: Sequence[str] = (),
    max_bytes: int = 1000,
    resolver: AbstractResolver | None = None,
    timeout_s: float = 30.0,
    connect_timeout_s: float = 10.0,
    max_redirects: int = 5,
) -> AsyncIterator[SafeFetcher]:
    config = MediaFetchConfig(
        allow_hosts=list(allow),
        timeout_s=timeout_s,
        connect_timeout_s=connect_timeout_s,
        max_redirects=max_redirects,
    )
    f = SafeFetcher(config, max_bytes=max_bytes, resolver=resolver)
    try:
        yield f
    finally:
        await f.aclose()


async def refused(f: SafeFetcher, url: str) -> FetchRefused:
    with pytest.raises(FetchRefused) as info:
        await f.fetch(url)
    return info.value


# --- the address policy -----------------------------------------------------------------

FORBIDDEN = [
    ("127.0.0.1", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.5.4", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "cloud metadata"),
    ("169.254.10.10", "link-local"),
    ("fe80::1", "link-local"),
    ("100.64.0.7", "CGNAT"),
    ("224.0.0.251", "multicast"),
    ("ff02::1", "multicast"),
    ("fd00:ec2::254", "cloud metadata"),
    ("fc00::5", "private"),
    ("168.63.129.16", "cloud metadata"),
    ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
    ("::ffff:10.0.0.1", "IPv4-mapped private"),
    ("::ffff:169.254.169.254", "IPv4-mapped cloud metadata"),
    ("64:ff9b::7f00:1", "NAT64 loopback"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("255.255.255.255", "broadcast"),
    ("240.1.2.3", "reserved"),
]


@pytest.mark.parametrize(("address", "kind"), FORBIDDEN)
def test_every_forbidden_class_is_named(address: str, kind: str) -> None:
    why = address_refusal(ipaddress.ip_address(address))
    assert why is not None and kind in why


@pytest.mark.parametrize("address", [PUBLIC, "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


def test_builds_outside_a_running_loop() -> None:
    f = SafeFetcher(MediaFetchConfig(), max_bytes=10)
    assert f.max_bytes == 10 and issubclass(FetchRefused, ValidationError)


# --- no connection to a forbidden address -----------------------------------------------


@pytest.mark.parametrize(("address", "kind"), FORBIDDEN)
async def test_name_resolving_to_a_forbidden_address_is_never_connected(address: str, kind: str) -> None:
    """The listener stands on 127.0.0.1 (or ::1 for ::1) at the URL's port: had the connector
    gone ahead with a loopback answer, it would have counted the connection."""
    if address == "::1" and not HAS_IPV6:
        pytest.skip("no IPv6 loopback")
    async with listening("::1" if address == "::1" else "127.0.0.1") as server:
        resolver = FakeResolver({"media.test": [[address]]})
        async with fetcher(resolver=resolver) as f:
            error = await refused(f, f"http://media.test:{server.port}/cat.png")
        assert kind in error.reason and "forbidden" in error.reason
        assert resolver.calls == ["media.test"]
        assert server.accepted == 0
        assert error.message == f"media URL http://media.test:{server.port}/cat.png: {error.reason}"
        assert error.details == {"url": f"http://media.test:{server.port}/cat.png", "reason": error.reason}


async def test_the_same_name_allow_listed_is_connected() -> None:
    """Control for the test above: the listener does count a connection that is made."""
    async with listening() as server:
        resolver = FakeResolver({"media.test": [["127.0.0.1"]]})
        async with fetcher(resolver=resolver, allow=["Media.Test."]) as f:
            got = await f.fetch(f"http://media.test:{server.port}/x")
        assert got.body == b"ok" and server.accepted == 1


async def test_one_forbidden_address_among_public_ones_refuses_the_name() -> None:
    async with listening() as server:
        resolver = FakeResolver({"media.test": [[PUBLIC, "127.0.0.1"]]})
        async with fetcher(resolver=resolver) as f:
            error = await refused(f, f"http://media.test:{server.port}/")
        assert "127.0.0.1 (loopback address)" in error.reason
        assert server.accepted == 0


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("[::ffff:127.0.0.1]", "IPv4-mapped loopback"),
        ("[::1]", "loopback"),
        ("10.0.0.8", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("[fd00:ec2::254]", "cloud metadata"),
        ("168.63.129.16", "cloud metadata"),
        ("100.64.1.1", "CGNAT"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
    ],
)
async def test_ip_literals_are_checked_although_aiohttp_skips_the_resolver(host: str, kind: str) -> None:
    async with listening() as server:
        resolver = FakeResolver({})
        async with fetcher(resolver=resolver) as f:
            error = await refused(f, f"http://{host}:{server.port}/")
        assert kind in error.reason
        assert resolver.calls == []
        assert server.accepted == 0


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f.0.0.1", "017700000001"])
async def test_non_canonical_numeric_hosts_are_refused(host: str) -> None:
    async with listening() as server:
        resolver = FakeResolver({})
        async with fetcher(resolver=resolver) as f:
            error = await refused(f, f"http://{host}:{server.port}/")
        assert "canonical" in error.reason or "not a valid URL" in error.reason
        assert server.accepted == 0


async def test_allow_listed_ip_literal_is_fetched() -> None:
    async with listening() as server:
        async with fetcher(allow=["127.0.0.1"]) as f:
            got = await f.fetch(f"http://127.0.0.1:{server.port}/a.png?X-Amz-Signature={SECRET}")
        assert got.body == b"ok" and server.accepted == 1
        assert got.url == f"http://127.0.0.1:{server.port}/a.png?<redacted>"


async def test_one_resolution_no_rebinding_window() -> None:
    """The name answers a public address first and 127.0.0.1 after: a design that checks one
    answer and connects with another would reach the loopback listener."""
    async with listening() as server:
        resolver = FakeResolver({"rebind.test": [[PUBLIC], ["127.0.0.1"]]})
        async with fetcher(resolver=resolver, connect_timeout_s=1.0, timeout_s=2.0) as f:
            error = await refused(f, f"http://rebind.test:{server.port}/")
        assert error.reason.startswith(("could not connect", "timed out"))
        assert resolver.calls == ["rebind.test"]
        assert server.accepted == 0


# --- schemes and credentials ------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a",
        "file:///etc/passwd",
        "data:image/png;base64,AAAA",
        "gopher://x/",
        "//x/y",
        "not a url",
    ],
)
async def test_only_http_and_https(url: str) -> None:
    async with fetcher() as f:
        error = await refused(f, url)
    assert "scheme" in error.reason or "not a valid URL" in error.reason


async def test_userinfo_is_refused_without_connecting() -> None:
    async with listening() as server:
        async with fetcher(allow=["127.0.0.1"]) as f:
            error = await refused(f, f"http://alice:{SECRET}@127.0.0.1:{server.port}/")
        assert "credentials" in error.reason and SECRET not in str(error) and "alice" not in str(error)
        assert server.accepted == 0


# --- redirects ----------------------------------------------------------------------------


def redirect_app(
    location: Callable[[web.Request], str], seen: list[web.Request] | None = None
) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        if seen is not None:
            seen.append(request)
        if request.path == "/final":
            return web.Response(body=b"final", content_type="image/png")
        raise web.HTTPFound(location(request))

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    return app


@pytest.mark.parametrize(
    "target",
    [
        "http://inside.test:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://localhost:{port}/x",
        "http://10.9.9.9/",
    ],
)
async def test_redirect_to_a_forbidden_address_is_refused(target: str) -> None:
    async with listening() as inside:
        resolver = FakeResolver({"inside.test": [["127.0.0.1"]], "localhost": [["127.0.0.1"]]})
        location = target.format(port=inside.port)
        async with serving(redirect_app(lambda _: location)) as base:
            async with fetcher(allow=["127.0.0.1"], resolver=resolver) as f:
                error = await refused(f, f"{base}/start")
        hop = location.replace("::ffff:127.0.0.1", "::ffff:7f00:1")  # yarl's canonical IPv6 form
        assert error.reason.startswith(f"redirect to {hop}: ") and "forbidden" in error.reason
        assert inside.accepted == 0


def hops_app() -> web.Application:
    async def hop(request: web.Request) -> web.StreamResponse:
        n = int(request.match_info["n"])
        if n == 0:
            return web.Response(body=b"end", content_type="text/plain")
        raise web.HTTPMovedPermanently(f"/hop/{n - 1}" if n % 2 else f"{request.url.origin()}/hop/{n - 1}")

    app = web.Application()
    app.router.add_get("/hop/{n}", hop)
    return app


async def test_five_redirects_are_followed_a_sixth_is_refused() -> None:
    async with serving(hops_app()) as base, fetcher(allow=["127.0.0.1"]) as f:
        got = await f.fetch(f"{base}/hop/5")
        assert got.body == b"end" and got.url == f"{base}/hop/0"
        error = await refused(f, f"{base}/hop/6")
    assert error.reason == "more than 5 redirects"


async def test_max_redirects_zero_refuses_the_first() -> None:
    async with serving(hops_app()) as base, fetcher(allow=["127.0.0.1"], max_redirects=0) as f:
        assert (await f.fetch(f"{base}/hop/0")).body == b"end"
        assert (await refused(f, f"{base}/hop/1")).reason == "more than 0 redirects"


async def test_redirect_to_another_scheme_or_with_credentials_is_refused() -> None:
    seen: list[web.Request] = []
    targets = iter(["file:///etc/passwd", "http://bob:pw@127.0.0.1:1/final"])
    async with (
        serving(redirect_app(lambda _: next(targets), seen)) as base,
        fetcher(allow=["127.0.0.1"]) as f,
    ):
        assert "scheme 'file'" in (await refused(f, f"{base}/a")).reason
        assert "credentials" in (await refused(f, f"{base}/b")).reason
    assert [r.path for r in seen] == ["/a", "/b"]


async def test_no_cookie_or_authorization_is_forwarded() -> None:
    seen: list[web.Request] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        if request.path == "/final":
            return web.Response(body=b"final")
        response = web.HTTPFound("/final")
        response.set_cookie("sid", "caller-session")
        raise response

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    async with serving(app) as base, fetcher(allow=["127.0.0.1"]) as f:
        assert (await f.fetch(f"{base}/start")).body == b"final"
        assert (await f.fetch(f"{base}/final")).body == b"final"
    assert [r.path for r in seen] == ["/start", "/final", "/final"]
    for request in seen:
        assert "Cookie" not in request.headers and "Authorization" not in request.headers
        assert request.headers["User-Agent"] == USER_AGENT


async def test_no_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    async with listening() as proxy, listening() as origin:
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with fetcher(allow=["127.0.0.1"]) as f:
            assert (await f.fetch(f"http://127.0.0.1:{origin.port}/")).body == b"ok"
        assert proxy.accepted == 0 and origin.accepted == 1


# --- status, size, time -------------------------------------------------------------------


def body_app() -> web.Application:
    async def sized(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=b"x" * int(request.match_info["n"]), content_type="image/png", charset="utf-8"
        )

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(int(request.match_info["chunks"])):
            await response.write(b"y" * 300)
        await response.write_eof()
        return response

    async def status(request: web.Request) -> web.StreamResponse:
        return web.Response(status=int(request.match_info["code"]), text="no")

    app = web.Application()
    app.router.add_get("/sized/{n}", sized)
    app.router.add_get("/chunked/{chunks}", chunked)
    app.router.add_get("/status/{code}", status)
    return app


@pytest.mark.parametrize("code", [404, 500, 304, 204])
async def test_non_2xx_is_refused_naming_the_status(code: int) -> None:
    async with serving(body_app()) as base, fetcher(allow=["127.0.0.1"]) as f:
        if code == 204:
            assert (await f.fetch(f"{base}/status/204")).body == b""
            return
        assert (await refused(f, f"{base}/status/{code}")).reason == f"answered HTTP {code}"


async def test_body_at_the_cap_passes_with_its_content_type() -> None:
    async with serving(body_app()) as base, fetcher(allow=["127.0.0.1"], max_bytes=1000) as f:
        got = await f.fetch(f"{base}/sized/1000")
    assert got.body == b"x" * 1000 and got.content_type == "image/png"


async def test_content_length_over_the_cap_is_refused_before_reading() -> None:
    """The server announces 10 GB and sends nothing: only a refusal on the header ends this
    before the deadline (a read would wait for the timeout instead)."""
    answered = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n")
        await writer.drain()
        answered.set()
        await reader.read()  # until the fetcher hangs up
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with fetcher(allow=["127.0.0.1"], max_bytes=1000, timeout_s=60) as f:
            error = await refused(f, f"http://127.0.0.1:{port}/big")
    finally:
        server.close()
        await server.wait_closed()
    assert answered.is_set()
    assert error.reason == "body of 10000000000 bytes exceeds the 1000-byte cap"


async def test_chunked_body_over_the_cap_is_refused_while_streaming() -> None:
    async with serving(body_app()) as base, fetcher(allow=["127.0.0.1"], max_bytes=1000) as f:
        assert len((await f.fetch(f"{base}/chunked/3")).body) == 900
        error = await refused(f, f"{base}/chunked/50")
        assert error.reason == "body exceeds the 1000-byte cap"
        received = 0
        with pytest.raises(FetchRefused):
            async with f.stream(f"{base}/chunked/50") as (_content_type, chunks):
                async for chunk in chunks:
                    received += len(chunk)
        assert received <= 1000


async def test_stream_yields_the_body_in_chunks() -> None:
    async with serving(body_app()) as base, fetcher(allow=["127.0.0.1"], max_bytes=10**6) as f:
        async with f.stream(f"{base}/sized/200000") as (content_type, chunks):
            parts = [chunk async for chunk in chunks]
    assert content_type == "image/png"
    assert b"".join(parts) == b"x" * 200000 and len(parts) > 1


async def test_a_server_that_never_answers_times_out() -> None:
    async with listening(hold=True) as server:
        async with fetcher(allow=["127.0.0.1"], timeout_s=0.3) as f:
            error = await refused(f, f"http://127.0.0.1:{server.port}/slow")
        assert error.reason.startswith("timed out")
        assert server.accepted == 1


async def test_aclose_is_idempotent_and_the_fetcher_reopens() -> None:
    async with listening() as server:
        f = SafeFetcher(MediaFetchConfig(allow_hosts=["127.0.0.1"]), max_bytes=10)
        await f.aclose()
        assert (await f.fetch(f"http://127.0.0.1:{server.port}/")).body == b"ok"
        await f.aclose()
        await f.aclose()


# --- no secret anywhere -------------------------------------------------------------------


async def test_presigned_query_never_reaches_messages_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    query = f"?X-Amz-Signature={SECRET}&X-Amz-Credential=AKIA{SECRET}"
    errors: list[FetchRefused] = []
    async with listening(hold=True) as slow, serving(body_app()) as base:
        redirecting = redirect_app(lambda _: f"http://10.0.0.1/next{query}")
        async with serving(redirecting) as redirect_base:
            resolver = FakeResolver({"inside.test": [["127.0.0.1"]]})
            async with fetcher(allow=["127.0.0.1"], resolver=resolver, max_bytes=100, timeout_s=0.3) as f:
                for url in [
                    f"http://10.0.0.1/a{query}",
                    f"http://inside.test/a{query}",
                    f"http://user:{SECRET}@127.0.0.1:{slow.port}/a{query}",
                    f"{base}/status/403{query}",
                    f"{base}/sized/5000{query}",
                    f"{base}/chunked/5{query}",
                    f"{redirect_base}/r{query}",
                    f"http://127.0.0.1:{slow.port}/a{query}",
                    f"ftp://127.0.0.1/a{query}",
                    f"http://127.0.0.1:1/closed{query}",
                    f"http://[::1/a{query}",
                ]:
                    errors.append(await refused(f, url))
    assert len({e.reason for e in errors}) == len(errors)  # every path above was a distinct one
    for error in errors:
        text = "".join(traceback.format_exception(error)) + repr(error) + repr(error.details)
        assert SECRET not in text and "X-Amz" not in text, text
        assert "?<redacted>" in error.message or "unparseable" in error.message
    assert caplog.records and SECRET not in caplog.text and "X-Amz" not in caplog.text
