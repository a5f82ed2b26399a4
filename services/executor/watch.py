"""One provider call's view of the HTTP transport: when the response head arrived, and what its
headers asked for.

``Watched`` implements the ``HttpTransport`` Protocol over the executor's transport. Whole
answers are read through ``stream_lines`` too (status and headers first, then the body), so a
call of either kind knows when its response head arrived (``ttft_ms`` of a whole answer is the
time to the head) and can read ``Retry-After`` / ``retry-after-ms`` from a refusal. It closes
nothing: the transport underneath is the executor's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from email.utils import parsedate_to_datetime

from services.contracts.errors import GatewayError

from .providers.media_base import Downloads, HeadedDownloads
from .providers.transport import HttpTransport, StreamingReply

#: The detail of a provider error that carries how long the provider asked to wait (ms).
RETRY_AFTER_MS = "retry_after_ms"


class Watched:
    def __init__(self, http: HttpTransport, on_head: Callable[[], None] | None = None):
        self._http = http
        self.on_head = on_head  # called as the response head arrives
        self.head_at: float | None = None  # perf_counter() when the status line and headers arrived
        self.headers: Mapping[str, str] = {}

    def _head(self, reply: StreamingReply) -> None:
        self.head_at = time.perf_counter()
        self.headers = reply.headers
        if self.on_head is not None:
            self.on_head()

    async def post_json(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float | None
    ) -> tuple[int, bytes]:
        async with self._http.stream_lines(url, headers, body, timeout_s) as reply:
            self._head(reply)
            return reply.status, await reply.read()

    @contextlib.asynccontextmanager
    async def stream_lines(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float | None
    ) -> AsyncIterator[StreamingReply]:
        async with self._http.stream_lines(url, headers, body, timeout_s) as reply:
            self._head(reply)
            yield reply

    async def get(self, url: str, headers: Mapping[str, str], timeout_s: float | None) -> tuple[int, bytes]:
        """A download after the call's answer (``providers.media_base.Downloads``), when the
        transport underneath can; not watched (the answer's head was already seen)."""
        if not isinstance(self._http, Downloads):
            raise TypeError(f"{type(self._http).__name__} cannot download")
        return await self._http.get(url, headers, timeout_s)

    async def get_reply(
        self, url: str, headers: Mapping[str, str], timeout_s: float | None
    ) -> tuple[int, Mapping[str, str], bytes]:
        """``get`` with the response's headers (none when the transport underneath gives none)."""
        if isinstance(self._http, HeadedDownloads):
            return await self._http.get_reply(url, headers, timeout_s)
        status, body = await self.get(url, headers, timeout_s)
        return status, {}, body

    async def aclose(self) -> None:
        pass

    def annotate(self, err: GatewayError) -> None:
        """Give ``err`` the wait its response asked for (``details["retry_after_ms"]``), if any."""
        ms = retry_after_ms(self.headers)
        if ms is not None:
            err.details.setdefault(RETRY_AFTER_MS, ms)


def retry_after_ms(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """How long a response asks the caller to wait, in ms: ``retry-after-ms`` (milliseconds, as
    OpenAI and Azure send it) wins over ``Retry-After`` (seconds, or an HTTP date). None: neither,
    or not a time."""
    raw = _get(headers, "retry-after-ms")
    if raw is not None:
        try:
            ms = float(raw)
        except ValueError:
            ms = -1.0
        if ms >= 0 and ms == ms and ms != float("inf"):
            return ms
    raw = _get(headers, "retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds == float("inf"):
        return None
    return max(seconds, 0.0) * 1000


def _get(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:  # (a plain dict: looked up case-insensitively too)
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value.strip() if isinstance(value, str) else None
