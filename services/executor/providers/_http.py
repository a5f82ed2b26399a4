"""HTTP plumbing the adapters share: post JSON, read error bodies, pump a stream through a parser.

Everything here runs inside ``map_http_errors``, so no transport error escapes; a non-2xx
answer becomes ``upstream_error`` carrying the provider's own message; a 2xx body that is
not the JSON object the adapter expects becomes ``ProviderError``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any, Protocol, TypeVar

import orjson

from services.contracts.errors import ProviderError, ValidationError
from services.contracts.events import ChatRequested, EmbedRequested, ToolCall

from ..targets import Target
from ._embeddings import Embeddings
from .base import Completion, StreamDelta, StreamParser, map_http_errors, upstream_error
from .transport import HttpTransport

#: Longest provider error text carried into a gateway error.
MAX_ERROR_CHARS = 500


def is_success(status: int) -> bool:
    return 200 <= status < 300


def headers(extra: Mapping[str, str]) -> dict[str, str]:
    """Request headers: JSON content type plus the adapter's own (auth, versions)."""
    return {"content-type": "application/json", **extra}


def bearer(api_key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {api_key}"} if api_key else {}


def error_message(raw: bytes) -> str:
    """The provider's own error text: ``{"error": {"message": ...}}`` (OpenAI, Anthropic),
    ``{"error": "..."}`` (Ollama), else the raw body; at most ``MAX_ERROR_CHARS`` characters."""
    message: str | None = None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            message = err.get("message") or None
        elif isinstance(err, str):
            message = err
        if message is None and isinstance(body.get("message"), str):
            message = body["message"]
    if message is None:
        message = raw.decode("utf-8", "replace").strip() or "(empty body)"
    return str(message)[:MAX_ERROR_CHARS]


def tool_arguments(call: ToolCall) -> Any:
    """A tool call's JSON ``arguments`` as an object, for providers that take objects;
    ``ValidationError`` when the caller sent arguments that are not JSON."""
    try:
        return orjson.loads(call.function.arguments or "{}")
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"tool call {call.id}: arguments are not valid JSON", param="messages") from exc


def malformed(provider: str, what: str, sample: str | bytes = "") -> ProviderError:
    """The provider answered 2xx with something we cannot read."""
    if isinstance(sample, bytes):
        sample = sample.decode("utf-8", "replace")
    suffix = f": {sample[:200]}" if sample else ""
    return ProviderError(f"{provider}: {what}{suffix}", details={"upstream_status": None})


def loads_line(provider: str, payload: str) -> dict[str, Any]:
    """One JSON object from a stream line; anything else is a malformed stream."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise malformed(provider, "malformed stream line", payload) from exc
    if not isinstance(obj, dict):
        raise malformed(provider, "malformed stream line", payload)
    return obj


T = TypeVar("T")


async def post_json(
    http: HttpTransport,
    provider: str,
    url: str,
    hdrs: Mapping[str, str],
    body: dict[str, Any],
    from_wire: Callable[[dict[str, Any]], T],
) -> T:
    """POST ``body`` and read the whole answer through ``from_wire``."""
    with map_http_errors(provider):
        status, raw = await http.post_json(url, hdrs, orjson.dumps(body), None)
    if not is_success(status):
        raise upstream_error(provider, status, error_message(raw))
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise malformed(provider, "response is not JSON", raw) from exc
    if not isinstance(data, dict):
        raise malformed(provider, "response is not a JSON object", raw)
    try:
        return from_wire(data)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        # A 2xx body of the wrong shape (some compatible servers answer 200 with an error object).
        raise malformed(provider, "unexpected response shape", error_message(raw)) from exc


async def stream_deltas(
    http: HttpTransport,
    provider: str,
    url: str,
    hdrs: Mapping[str, str],
    body: dict[str, Any],
    parser: StreamParser,
) -> AsyncGenerator[StreamDelta, None]:
    """POST ``body`` and yield the parser's deltas line by line; ``parser.close()`` decides
    whether the stream ended properly. A non-2xx status is read and raised before any line."""
    with map_http_errors(provider):
        async with http.stream_lines(url, hdrs, orjson.dumps(body), None) as reply:
            if not is_success(reply.status):
                raw = await reply.read()
                raise upstream_error(provider, reply.status, error_message(raw))
            async for line in reply.lines():
                for delta in parser.feed(line):
                    yield delta
            for delta in parser.close():
                yield delta


def sse_field(line: str) -> tuple[str, str] | None:
    """Split one server-sent-events line into ``(field, value)``; ``None`` for blank lines
    and ``:`` comments. One space after the colon belongs to the syntax, not the value."""
    if not line or line[0] == ":":
        return None
    field, sep, value = line.partition(":")
    if sep and value[:1] == " ":
        value = value[1:]
    return field, value


class WireMapping(Protocol):
    """The pure half of an adapter, which ``complete_via`` / ``stream_via`` drive. ``req`` is
    the request being answered, for mappings whose reading depends on it (Anthropic reads a
    structured answer out of the tool it forced)."""

    def to_wire(self, req: ChatRequested, deployment: Target, *, stream: bool) -> dict[str, Any]: ...

    def from_wire(self, body: dict[str, Any], req: ChatRequested | None = None) -> Completion: ...

    def stream_parser(self, provider: str = ..., req: ChatRequested | None = None) -> StreamParser: ...


async def complete_via(
    adapter: WireMapping,
    http: HttpTransport,
    req: ChatRequested,
    deployment: Target,
    url: str,
    hdrs: Mapping[str, str],
) -> Completion:
    """One whole answer; ``model`` falls back to the deployment's when the body has none."""
    body = adapter.to_wire(req, deployment, stream=False)
    completion = await post_json(
        http, deployment.provider, url, hdrs, body, lambda data: adapter.from_wire(data, req)
    )
    completion.model = completion.model or deployment.upstream_model
    return completion


def stream_via(
    adapter: WireMapping,
    http: HttpTransport,
    req: ChatRequested,
    deployment: Target,
    url: str,
    hdrs: Mapping[str, str],
) -> AsyncGenerator[StreamDelta, None]:
    """An async generator of deltas: the body is built now, nothing is sent until iterated."""
    body = adapter.to_wire(req, deployment, stream=True)
    parser = adapter.stream_parser(deployment.provider, req)
    return stream_deltas(http, deployment.provider, url, hdrs, body, parser)


class JSONEndpoint(WireMapping, Protocol):
    """What an adapter using ``PostsJSON`` has: the pure mapping and its one endpoint."""

    def endpoint(self, deployment: Target, api_key: str | None) -> tuple[str, dict[str, str]]: ...


class PostsJSON:
    """``complete`` and ``stream`` for an adapter that POSTs JSON to one endpoint; the adapter
    supplies ``endpoint(deployment, api_key) -> (url, headers)`` and the pure mapping (it is a
    ``JSONEndpoint``)."""

    def endpoint(self, deployment: Target, api_key: str | None) -> tuple[str, dict[str, str]]:
        raise NotImplementedError

    async def complete(
        self: JSONEndpoint, http: HttpTransport, req: ChatRequested, deployment: Target, api_key: str | None
    ) -> Completion:
        return await complete_via(self, http, req, deployment, *self.endpoint(deployment, api_key))

    def stream(
        self: JSONEndpoint, http: HttpTransport, req: ChatRequested, deployment: Target, api_key: str | None
    ) -> AsyncGenerator[StreamDelta, None]:
        """An async generator: nothing is sent until it is iterated."""
        return stream_via(self, http, req, deployment, *self.endpoint(deployment, api_key))


class PostsEmbeddings:
    """``embed`` for an adapter that POSTs one JSON body per call; the adapter supplies
    ``endpoint(deployment, api_key) -> (url, headers)``, ``to_wire`` and ``from_wire``."""

    def endpoint(self, deployment: Target, api_key: str | None) -> tuple[str, dict[str, str]]:
        raise NotImplementedError

    def to_wire(self, req: EmbedRequested, deployment: Target) -> dict[str, Any]:
        raise NotImplementedError

    def from_wire(self, body: dict[str, Any], req: EmbedRequested) -> Embeddings:
        raise NotImplementedError

    async def embed(
        self, http: HttpTransport, req: EmbedRequested, deployment: Target, api_key: str | None
    ) -> Embeddings:
        url, hdrs = self.endpoint(deployment, api_key)
        done = await post_json(
            http,
            deployment.provider,
            url,
            hdrs,
            self.to_wire(req, deployment),
            lambda body: self.from_wire(body, req),
        )
        done.model = done.model or deployment.upstream_model
        return done
