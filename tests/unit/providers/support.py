"""Helpers for the provider tests: request and deployment factories, a recording
handler, canned responses (which ``upstreams`` serve over real HTTP), stream collection, and
``AsgiTransport`` (adapters against an ASGI app in this process)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from typing import Any

import httpx
import orjson

from services.contracts.events import ChatParams, ChatRequested, Message
from services.executor.providers.base import StreamDelta, StreamParser
from services.executor.providers.transport import StreamingReply, split_lines
from services.executor.targets import Target

Handler = Callable[[httpx.Request], httpx.Response]

#: Longer than a stream line may be when read with aiohttp's ``readline`` (twice its read
#: buffer: 128 KiB in aiohttp 3.9, 512 KiB in 3.14); one SSE event can be this long.
LONG_LINE = 1_100_000


def chat(*messages: dict[str, Any], **params: Any) -> ChatRequested:
    """A chat request; messages default to one user "Hi", params go to ChatParams."""
    msgs = [Message.model_validate(m) for m in messages] or [Message(role="user", content="Hi")]
    return ChatRequested(
        request_id="req-1", tenant_id="t1", model="alias", messages=msgs, params=ChatParams(**params)
    )


def deployment(kind: str, base_url: str, upstream_model: str = "m-1", provider: str | None = None) -> Target:
    return Target(
        alias="alias",
        provider=provider or f"{kind}-main",
        kind=kind,
        base_url=base_url,
        upstream_model=upstream_model,
    )


class Recorder:
    """A handler that keeps the requests it saw."""

    def __init__(self, respond: Handler) -> None:
        self.respond = respond
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.respond(request)

    @property
    def request(self) -> httpx.Request:
        assert len(self.requests) == 1, f"expected one request, saw {len(self.requests)}"
        return self.requests[0]

    @property
    def body(self) -> Any:
        return orjson.loads(self.request.content)


def answer(status: int, body: bytes, content_type: str = "application/json") -> Handler:
    return lambda request: httpx.Response(status, content=body, headers={"content-type": content_type})


def raising(exc_type: type[httpx.HTTPError], message: str = "boom") -> Handler:
    def respond(request: httpx.Request) -> httpx.Response:
        raise exc_type(message, request=request)  # type: ignore[call-arg]

    return respond


async def collect(deltas: AsyncIterable[StreamDelta]) -> list[StreamDelta]:
    return [d async for d in deltas]


def feed_all(parser: StreamParser, raw: bytes | str) -> list[StreamDelta]:
    """Feed a recorded stream line by line, as a transport's ``lines()`` would, then close."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    out: list[StreamDelta] = []
    for line in text.splitlines():
        out.extend(parser.feed(line))
    out.extend(parser.close())
    return out


def joined(deltas: list[StreamDelta]) -> str:
    return "".join(d.content or "" for d in deltas)


def streamed(
    body: bytes, content_type: str, *, piece: int | None = None, then: Exception | None = None
) -> Handler:
    """A 200 answer whose body arrives in ``piece``-byte chunks (as a network would cut it),
    optionally followed by ``then`` raised mid-stream."""

    async def chunks() -> AsyncIterator[bytes]:
        size = piece or len(body) or 1
        for start in range(0, len(body), size):
            yield body[start : start + size]
        if then is not None:
            raise then

    return lambda request: httpx.Response(200, content=chunks(), headers={"content-type": content_type})


class AsgiTransport:
    """An ``HttpTransport`` into an ASGI app in this process (the provider emulator), so a
    suite can check adapters against its wire formats with no network. Test-only (on httpx's
    ASGI transport); every provider call of the gateway goes through ``AiohttpTransport``."""

    def __init__(self, app: Any) -> None:
        self._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))

    async def post_json(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float | None
    ) -> tuple[int, bytes]:
        response = await self._client.post(url, content=body, headers=headers, timeout=_timeout(timeout_s))
        return response.status_code, response.content

    @contextlib.asynccontextmanager
    async def stream_lines(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float | None
    ) -> AsyncIterator[StreamingReply]:
        async with self._client.stream(
            "POST", url, content=body, headers=headers, timeout=_timeout(timeout_s)
        ) as r:
            yield _AsgiReply(r)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> AsgiTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _AsgiReply:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        return await self._response.aread()

    def lines(self) -> AsyncIterator[str]:
        return split_lines(self._response.aiter_bytes())


def _timeout(timeout_s: float | None) -> Any:
    return httpx.USE_CLIENT_DEFAULT if timeout_s is None else timeout_s
