"""The few HTTP pieces the edge needs, on raw ASGI: no middleware stack, no per-request
objects beyond one ``Request`` and one response.

Why not Starlette's ``Request``/``Response``/routing: each adds allocations, header
parsing and a middleware hop per request; the edge spends its CPU budget (well under
a millisecond per request) on mapping events instead.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from services.contracts.errors import GatewayError, PayloadTooLarge, ValidationError

from .auth import Caller
from .errors import JSON, HTTPError

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:@/+=-]{1,128}$")


class ClientGone(Exception):
    """The HTTP client disconnected before its answer was sent."""


#: Scope key of the callback the server (``server.EdgeHttpProtocol``) calls when the client
#: disconnects before its response is complete.
DISCONNECT_HOOK = "llmgw.on_disconnect"

T = TypeVar("T")


class Request:
    """One HTTP request: what the route needs, read once."""

    __slots__ = (
        "scope",
        "receive",
        "started",
        "params",
        "request_id",
        "caller",
        "body",
        "authorization",
        "request_id_header",
        "content_length",
        "client_id",
        "dispatched",
    )

    def __init__(self, scope: Scope, receive: Receive, started: float, params: dict[str, str]):
        self.scope = scope
        self.receive = receive
        self.started = started
        self.params = params
        self.request_id = ""
        self.caller: Caller | None = None
        self.body = b""
        self.authorization: bytes | None = None
        self.request_id_header: bytes | None = None
        self.content_length: bytes | None = None
        self.client_id: str | None = None
        #: The request went to the pipeline (``until_disconnect`` waits for its answer): an error
        #: from here on is the pipeline's answer, not one of the edge's own rejections.
        self.dispatched = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                self.authorization = value
            elif name == b"x-request-id":
                self.request_id_header = value
            elif name == b"content-length":
                self.content_length = value

    async def until_disconnect(self, awaitable: Awaitable[T]) -> T:
        """``await awaitable``, cancelled if the client disconnects first (then ``ClientGone``).

        No task and no read of the connection per request: the server calls the scope's
        ``DISCONNECT_HOOK`` when the connection is lost, and that cancels this wait. A server
        that does not (e.g. an ASGI test transport) just never cancels it."""
        self.dispatched = True
        task = asyncio.current_task()
        assert task is not None
        gone = False

        def on_disconnect() -> None:
            nonlocal gone
            gone = True
            task.cancel()

        self.scope[DISCONNECT_HOOK] = on_disconnect
        try:
            return await awaitable
        except asyncio.CancelledError:
            if gone and task.uncancel() == 0:  # cancelled by the hook alone, not also by a shutdown
                raise ClientGone from None
            raise
        finally:
            del self.scope[DISCONNECT_HOOK]

    def json(self) -> dict[str, Any]:
        """The body as a JSON object, or ``ValidationError`` saying why not."""
        try:
            doc = orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise ValidationError(f"request body is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ValidationError("request body must be a JSON object")
        return doc


def checked_request_id(raw: bytes) -> str:
    """An ``x-request-id`` usable as the request id (and a Kafka key), or ``ValidationError``."""
    if not _REQUEST_ID.match(raw):
        raise ValidationError(
            "x-request-id must be 1-128 characters from A-Z a-z 0-9 . _ : @ / + = -", param="x-request-id"
        )
    return raw.decode("ascii")


async def read_body(req: Request, limit: int) -> bytes:
    """The whole body, or ``PayloadTooLarge`` as soon as it is known to exceed ``limit``."""
    if req.content_length is not None:
        try:
            declared = int(req.content_length)
        except ValueError:
            raise ValidationError("invalid Content-Length header") from None
        if declared > limit:
            raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await req.receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class Response:
    """A whole response with a known body."""

    __slots__ = ("status", "body", "headers")

    def __init__(
        self,
        status: int,
        body: bytes,
        headers: Headers | None = None,
        content_type: tuple[bytes, bytes] = JSON,
    ):
        self.status = status
        self.body = body
        self.headers = [content_type, *(headers or ())]

    async def __call__(self, send: Send, receive: Receive) -> None:
        self.headers.append((b"content-length", str(len(self.body)).encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


def json_response(status: int, doc: Any, headers: Headers | None = None) -> Response:
    return Response(status, orjson.dumps(doc), headers)


def ms_header(name: bytes, ms: float) -> tuple[bytes, bytes]:
    return name, b"%.3f" % ms


# --- routing ----------------------------------------------------------------------------

ErrorFormat = Callable[[GatewayError | HTTPError, Request], tuple[int, bytes]]
Handler = Callable[[Any, Request], Awaitable[Any]]


@dataclass(frozen=True)
class Route:
    """``path`` is exact, or ends in ``{name}``: that parameter takes the rest of the path
    (model ids may contain ``/``). ``auth``: needs an API key; ``body``: reads the body
    (up to the size limit); ``errors``: the error body shape of this route; ``operation``: the
    request operation it serves (named in the audit records of the edge's own rejections)."""

    method: str
    path: str
    handler: Handler
    errors: ErrorFormat
    auth: bool = True
    body: bool = False
    operation: str | None = None


@dataclass
class Router:
    routes: list[Route]
    _exact: dict[str, dict[str, Route]] = field(default_factory=dict)
    _prefixed: list[tuple[str, str, dict[str, Route]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for r in self.routes:
            if r.path.endswith("}"):
                prefix, _, name = r.path[:-1].rpartition("{")
                slot = next((m for p, n, m in self._prefixed if p == prefix), None)
                if slot is None:
                    slot = {}
                    self._prefixed.append((prefix, name, slot))
                slot[r.method] = r
            else:
                self._exact.setdefault(r.path, {})[r.method] = r

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route and its path parameters, or ``HTTPError`` 404 / 405."""
        methods = self._exact.get(path)
        params: dict[str, str] = {}
        if methods is None:
            for prefix, name, by_method in self._prefixed:
                if path.startswith(prefix) and len(path) > len(prefix):
                    methods, params = by_method, {name: path[len(prefix) :]}
                    break
            else:
                raise HTTPError(404, f"Invalid URL ({method} {path})")
        route = methods.get(method)
        if route is None:
            raise HTTPError(
                405,
                f"Method {method} not allowed for {path}",
                headers=[(b"allow", ", ".join(sorted(methods)).encode())],
            )
        return route, params
