"""The safe fetcher: the only way a caller-supplied URL is fetched (README "Safe fetching").

Only http(s) URLs without userinfo are fetched, and only from public unicast addresses:
loopback, private, link-local, CGNAT, multicast, unspecified, reserved and cloud metadata
addresses (and IPv4 embedded in IPv6 forms of them) are refused, unless the URL's host is
listed in ``MediaFetchConfig.allow_hosts``. The address checked is the address connected to:
names are resolved once, by the connector's resolver, which refuses forbidden answers before
any socket exists (no DNS rebinding window); IP literals, which aiohttp does not resolve, are
checked before the request. Redirects are followed by hand, each hop checked again. Bodies are
capped while streaming, the whole fetch (every hop and the body) has one deadline, and nothing
of the caller's travels: no cookies, no Authorization, no proxy from the environment.

Every failure is a ``FetchRefused`` whose message, details and log lines name only the
redacted URL (no userinfo, no query string: presigned URLs carry their signature there).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from services.contracts.errors import ValidationError
from services.runtime.config import MediaFetchConfig
from services.runtime.media.refs import redact_url as _redact

log = logging.getLogger(__name__)

USER_AGENT = "llmgw-media-fetcher"
_CHUNK = 65_536
_REDIRECTS = frozenset({301, 302, 303, 307, 308})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Cloud instance metadata and host agent endpoints (AWS/GCP/Azure/OpenStack, AWS IPv6,
#: Azure WireServer, Alibaba): named first so the refusal says what was aimed at.
_METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "168.63.129.16", "100.100.100.200")
)
#: Ranges refused by name, checked before ``ipaddress``'s broader properties; the list does
#: not rely on any one Python version's idea of ``is_private``/``is_global``.
_NAMED_NETWORKS: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.ip_network(net), why)
    for net, why in (
        ("100.64.0.0/10", "shared address space (CGNAT)"),
        ("0.0.0.0/8", "this-network address"),
        ("10.0.0.0/8", "private address"),
        ("172.16.0.0/12", "private address"),
        ("192.168.0.0/16", "private address"),
        ("192.0.0.0/24", "IETF protocol address"),
        ("192.0.2.0/24", "documentation address"),
        ("198.51.100.0/24", "documentation address"),
        ("203.0.113.0/24", "documentation address"),
        ("198.18.0.0/15", "benchmarking address"),
        ("255.255.255.255/32", "broadcast address"),
        ("240.0.0.0/4", "reserved address"),
        ("fc00::/7", "private address (unique local)"),
        ("fec0::/10", "site-local address"),
        ("64:ff9b:1::/48", "local-use NAT64 address"),
        ("2001:db8::/32", "documentation address"),
        ("100::/64", "discard-only address"),
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
#: Hosts made only of numeric labels that are not a canonical IPv4 address (``127.1``,
#: ``0x7f.0.0.1``, ``2130706433``): resolvers map them onto addresses, so they are refused.
_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)")


class FetchRefused(ValidationError):
    """A caller's URL was not fetched, or not to the end. ``details``: ``url`` (redacted) and
    ``reason``. For a refused address no connection was made."""

    def __init__(self, shown_url: str, reason: str):
        super().__init__(f"media URL {shown_url}: {reason}", details={"url": shown_url, "reason": reason})
        self.reason = reason


@dataclass(frozen=True)
class Fetched:
    """A fetched body. ``url`` is the redacted URL the body came from (after redirects)."""

    body: bytes
    content_type: str | None
    url: str


def address_refusal(ip: IPAddress) -> str | None:
    """Why ``ip`` may not be connected to, or None when it is a public unicast address."""
    if ip in _METADATA:
        return "cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded, form = _embedded_ipv4(ip)
        if embedded is not None:
            why = address_refusal(embedded)
            return None if why is None else f"{form} {why}"
    if ip.is_loopback:
        return "loopback address"
    if ip.is_unspecified:
        return "unspecified address"
    if ip.is_link_local:
        return "link-local address"
    if ip.is_multicast:
        return "multicast address"
    for network, why in _NAMED_NETWORKS:
        if ip.version == network.version and ip in network:
            return why
    if ip.is_private:
        return "private address"
    if ip.is_reserved:
        return "reserved address"
    if not ip.is_global:
        return "address not globally routable"
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address | None, str]:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, "IPv4-mapped"
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64"
    if ip.sixtofour is not None:
        return ip.sixtofour, "6to4"
    return None, ""


def _normal_host(host: str) -> str:
    """A host as compared with ``allow_hosts``: lower case, no brackets or trailing dot,
    IP literals in their canonical form."""
    host = host.strip().strip("[]").rstrip(".").lower()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


class _AddressRefused(OSError):
    """Raised by the checking resolver; aiohttp hands it back as the ``os_error`` of a
    ``ClientConnectorError`` (it wraps any ``OSError`` from a resolver)."""


class _CheckingResolver(AbstractResolver):
    """Resolves through ``inner`` and refuses the answer when any address in it is forbidden,
    so the connector only ever connects to addresses this check has seen."""

    def __init__(self, inner: AbstractResolver, allowed: frozenset[str], *, owns_inner: bool):
        self._inner = inner
        self._allowed = allowed
        self._owns_inner = owns_inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        if _normal_host(host) in self._allowed:
            return answers
        refused = []
        for answer in answers:
            try:
                why = address_refusal(ipaddress.ip_address(answer["host"]))
            except ValueError:
                why = "not an IP address"
            if why is not None:
                refused.append(f"{answer['host']} ({why})")
        if refused:
            raise _AddressRefused(f"host {host} resolves to a forbidden address: {', '.join(refused)}")
        if not answers:
            raise _AddressRefused(f"host {host} resolves to no address")
        return answers

    async def close(self) -> None:
        if self._owns_inner:
            await self._inner.close()


def _content_type(response: aiohttp.ClientResponse) -> str | None:
    """The response's media type without parameters, or None when it sent none."""
    raw = response.headers.get("Content-Type")
    if not raw:
        return None
    return raw.split(";", 1)[0].strip().lower() or None


class SafeFetcher:
    """Fetches caller-supplied URLs under the rules in the module docstring.

    ``max_bytes`` caps every body; ``resolver`` replaces the system resolver (tests); the
    fetcher does not close an injected resolver. The aiohttp session is made on first use, so
    the fetcher may be built outside a running loop; ``aclose()`` releases it.
    """

    def __init__(self, config: MediaFetchConfig, *, max_bytes: int, resolver: AbstractResolver | None = None):
        self.config = config
        self.max_bytes = max_bytes
        self._allowed = frozenset(_normal_host(h) for h in config.allow_hosts)
        self._inner_resolver = resolver
        self._resolver: _CheckingResolver | None = None
        self._session: aiohttp.ClientSession | None = None

    async def fetch(self, url: str) -> Fetched:
        """The whole body of ``url``; ``FetchRefused`` for any refusal or failure."""
        async with self._open(url) as (response, shown):
            body = b"".join([chunk async for chunk in self._chunks(response, shown)])
            return Fetched(body=body, content_type=_content_type(response), url=_redact(str(response.url)))

    def stream(self, url: str) -> AbstractAsyncContextManager[tuple[str | None, AsyncIterator[bytes]]]:
        """``async with fetcher.stream(url) as (content_type, chunks)``: the body in chunks,
        never held whole. Checks, redirects and the Content-Length cap happen on entry; the
        iterator raises ``FetchRefused`` when the body passes ``max_bytes`` or the deadline."""
        return self._stream(url)

    @asynccontextmanager
    async def _stream(self, url: str) -> AsyncIterator[tuple[str | None, AsyncIterator[bytes]]]:
        async with self._open(url) as (response, shown):
            yield _content_type(response), self._chunks(response, shown)

    async def aclose(self) -> None:
        """Closes the session and the resolver the fetcher made; idempotent."""
        session, resolver = self._session, self._resolver
        self._session = self._resolver = None
        if session is not None:
            await session.close()
        if resolver is not None:
            await resolver.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            owned = self._inner_resolver is None
            inner = aiohttp.DefaultResolver() if self._inner_resolver is None else self._inner_resolver
            self._resolver = _CheckingResolver(inner, self._allowed, owns_inner=owned)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(resolver=self._resolver, use_dns_cache=False),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    @asynccontextmanager
    async def _open(self, url: str) -> AsyncIterator[tuple[aiohttp.ClientResponse, str]]:
        """The final 2xx response (released on exit) and the redacted original URL."""
        shown = _redact(url)
        deadline = asyncio.get_running_loop().time() + self.config.timeout_s
        current, where = self._checked(url, shown, hop=None), ""
        for hop in range(self.config.max_redirects + 1):
            response = await self._get(current, shown, deadline, where)
            if response.status in _REDIRECTS and "Location" in response.headers:
                location = response.headers["Location"]
                response.release()
                if hop == self.config.max_redirects:
                    raise self._refused(shown, f"more than {self.config.max_redirects} redirects")
                try:
                    target = str(response.url.join(URL(location)))
                except ValueError:
                    raise self._refused(shown, "redirect to an invalid URL") from None
                where = f"redirect to {_redact(target)}: "
                current = self._checked(target, shown, hop=_redact(target))
                log.debug("media URL %s: %s", shown, where.rstrip(": "))
                continue
            break
        if not 200 <= response.status < 300:
            response.release()
            raise self._refused(shown, f"answered HTTP {response.status}")
        length = response.content_length
        if length is not None and length > self.max_bytes:
            response.release()
            raise self._refused(shown, f"body of {length} bytes exceeds the {self.max_bytes}-byte cap")
        try:
            yield response, shown
        finally:
            response.release()

    def _checked(self, url: str, shown: str, *, hop: str | None) -> URL:
        """``url`` parsed, once its scheme, userinfo and (for an IP literal) address pass."""
        where = "" if hop is None else f"redirect to {hop}: "
        try:
            parsed = URL(url)
        except (ValueError, TypeError):
            raise self._refused(shown, f"{where}not a valid URL") from None
        if parsed.scheme not in ("http", "https"):
            raise self._refused(shown, f"{where}scheme {parsed.scheme or '(none)'!r} is not http or https")
        if parsed.user is not None or parsed.password is not None:
            raise self._refused(shown, f"{where}credentials in URLs are not accepted")
        if not parsed.host:
            raise self._refused(shown, f"{where}no host")
        host = _normal_host(parsed.host)
        if host in self._allowed:
            return parsed
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            if ":" in host or all(_NUMERIC_LABEL.fullmatch(label) for label in host.split(".")):
                raise self._refused(shown, f"{where}host {host} is not a canonical IP address") from None
            return parsed  # a name: the checking resolver sees what it resolves to
        why = address_refusal(ip)
        if why is not None:
            raise self._refused(shown, f"{where}{host} is a forbidden {why}")
        return parsed

    async def _get(self, url: URL, shown: str, deadline: float, where: str) -> aiohttp.ClientResponse:
        """One GET, no redirects followed; ``where`` prefixes a refusal's reason (the hop)."""
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise self._refused(shown, f"timed out after {self.config.timeout_s:g}s")
        timeout = aiohttp.ClientTimeout(
            total=remaining, connect=self.config.connect_timeout_s, sock_connect=self.config.connect_timeout_s
        )
        try:
            return await self._client().get(url, allow_redirects=False, timeout=timeout)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise self._failed(shown, exc, where) from None

    async def _chunks(self, response: aiohttp.ClientResponse, shown: str) -> AsyncIterator[bytes]:
        total = 0
        try:
            async for chunk in response.content.iter_chunked(_CHUNK):
                total += len(chunk)
                if total > self.max_bytes:
                    raise self._refused(shown, f"body exceeds the {self.max_bytes}-byte cap")
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._failed(shown, exc) from None

    def _failed(self, shown: str, exc: BaseException, where: str = "") -> FetchRefused:
        """The refusal for a failed request. aiohttp's own texts may quote the full URL
        (query string included), so only a fixed reason is kept, and callers raise it
        ``from None`` so no traceback carries the original exception either."""
        if isinstance(exc, TimeoutError):
            reason = (
                f"timed out (connect {self.config.connect_timeout_s:g}s, total {self.config.timeout_s:g}s)"
            )
        elif isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, _AddressRefused):
            reason = str(exc.os_error)
        elif isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
            reason = "TLS failed"
        elif isinstance(exc, aiohttp.ClientConnectorDNSError):
            reason = "could not resolve the host"
        elif isinstance(exc, aiohttp.ClientConnectorError):
            reason = "could not connect"
        elif isinstance(exc, aiohttp.InvalidURL | ValueError):
            reason = "not a valid URL"
        else:
            reason = f"fetch failed ({type(exc).__name__})"
        return self._refused(shown, where + reason)

    def _refused(self, shown: str, reason: str) -> FetchRefused:
        log.info("media URL %s refused: %s", shown, reason)
        return FetchRefused(shown, reason)
