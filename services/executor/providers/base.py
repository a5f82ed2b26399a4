"""The provider adapter roles, one Protocol per capability, and the normalised shapes they produce.

A provider implements only the capabilities it offers; the registry is keyed by
(provider kind, operation). A chat adapter is pure mapping plus two I/O methods (STYLE 4): ``to_wire`` builds the
upstream body, ``from_wire`` reads a whole response, a ``StreamParser`` turns stream
lines into ``StreamDelta``s; only ``complete`` and ``stream`` touch HTTP, through an
``HttpTransport``. No ``aiohttp`` error escapes an adapter:
``map_http_errors`` turns them into ``ProviderError`` / ``ProviderTimeout`` (STYLE 13).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import aiohttp.http

from services.contracts.errors import ProviderError, ProviderTimeout
from services.contracts.events import AssistantMessage, ChatRequested, EmbedRequested, ToolCallDelta, Usage

from ..targets import Target
from ._embeddings import Embeddings
from .transport import HttpTransport


@dataclass
class Completion:
    """A whole (non-streamed) answer, normalised."""

    message: AssistantMessage
    finish_reason: str
    usage: Usage
    model: str


@dataclass
class StreamDelta:
    """One normalised piece of a stream. The last one a parser yields has ``finish_reason``;
    ``usage`` is set once the provider has reported it (never estimated)."""

    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None


class StreamParser(Protocol):
    """Stateful, pure: fed one line (SSE or NDJSON) at a time."""

    def feed(self, line: str) -> list[StreamDelta]: ...

    def close(self) -> list[StreamDelta]:
        """The stream ended. Raises ProviderError if it ended before the provider finished."""
        ...


class ChatAdapter(Protocol):
    """Operation ``chat``."""

    kind: str

    def to_wire(self, req: ChatRequested, deployment: Target, *, stream: bool) -> dict[str, Any]: ...

    def from_wire(self, body: dict[str, Any]) -> Completion: ...

    def stream_parser(self) -> StreamParser: ...

    async def complete(
        self, http: HttpTransport, req: ChatRequested, deployment: Target, api_key: str | None
    ) -> Completion: ...

    def stream(
        self, http: HttpTransport, req: ChatRequested, deployment: Target, api_key: str | None
    ) -> AsyncGenerator[StreamDelta, None]: ...


class EmbeddingsAdapter(Protocol):
    """Operation ``embed``: ``to_wire`` builds the upstream body for all of ``req.input`` (the
    executor may have merged several requests' inputs into one), ``from_wire`` reads the answer
    into one vector per input, in input order and in ``req.encoding_format``; only ``embed``
    touches HTTP."""

    kind: str

    def to_wire(self, req: EmbedRequested, deployment: Target) -> dict[str, Any]: ...

    def from_wire(self, body: dict[str, Any], req: EmbedRequested) -> Embeddings: ...

    async def embed(
        self, http: HttpTransport, req: EmbedRequested, deployment: Target, api_key: str | None
    ) -> Embeddings: ...


@contextlib.contextmanager
def map_http_errors(provider: str) -> Iterator[None]:
    """Translate transport failures at the adapter boundary: timeouts (aiohttp's are
    ``TimeoutError``s) become ``ProviderTimeout``; any other transport failure (refused,
    reset, dropped mid-body, malformed HTTP) becomes ``ProviderError`` with no upstream
    status."""
    try:
        yield
    except TimeoutError as exc:
        raise ProviderTimeout(f"{provider}: upstream timed out ({type(exc).__name__})") from exc
    except (aiohttp.ClientError, aiohttp.http.HttpProcessingError) as exc:
        raise ProviderError(
            f"{provider}: upstream connection failed ({type(exc).__name__}: {exc})",
            details={"upstream_status": None},
        ) from exc


def upstream_error(provider: str, status: int, message: str) -> ProviderError:
    """A provider answered with an error status: keep its status and message."""
    return ProviderError(f"{provider} returned HTTP {status}: {message}", details={"upstream_status": status})
