"""Wire-format-independent plumbing: body parsing, timing, failures, streaming, drops.

Each provider module turns a request into either a JSON body or three lists of
pre-encoded stream events (``head``, ``body`` with one event per content chunk,
``tail``) and hands them to :class:`Stream`, which applies the scenario's
``chunk_delay_ms`` and ``disconnect_after``.

Dropping a connection: :class:`EmulatorApp` keeps the server's own ``send`` in the
scope; under uvicorn that is a bound method of the connection's request cycle,
whose ``transport`` we close, then wait for uvicorn's ``http.disconnect`` so the
server logs nothing. Under other servers we fall back to raising, which makes the
server abort the connection too.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .scenario import HEADER, Scenario

RAW_SEND = "emulator.raw_send"
_HEADER_BYTES = HEADER.encode()


class BadRequest(Exception):
    """The request cannot be served (400 in the provider's error shape)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


class EmulatorApp(Starlette):
    """Starlette that remembers the server's raw ``send`` so handlers can drop the connection.

    Routes without path parameters are dispatched straight from a
    ``(method, path)`` table, skipping Starlette's middleware stack and router
    (the emulator is a latency baseline); everything else goes through Starlette.
    """

    def __init__(self, routes: list[Route]) -> None:
        super().__init__(routes=routes)
        self.fast_routes: dict[tuple[str, str], Any] = {}
        for route in routes:
            if not isinstance(route, Route) or route.param_convertors:
                continue
            for method in route.methods or ():
                # the first route registered wins, as in Starlette's router
                self.fast_routes.setdefault((method, route.path), route.endpoint)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[RAW_SEND] = send
        if scope["type"] == "http":
            endpoint = self.fast_routes.get((scope["method"], scope["path"]))
            if endpoint is not None:
                scope["app"] = self
                response = await endpoint(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _cycle(scope: Scope) -> Any:
    return getattr(scope.get(RAW_SEND), "__self__", None)


def client_gone(scope: Scope) -> bool:
    """True once the server knows the client went away (uvicorn only; else False)."""
    return bool(getattr(_cycle(scope), "disconnected", False))


async def drop_connection(scope: Scope, receive: Receive) -> None:
    """Close the TCP connection now, whatever was (or was not) sent so far."""
    transport = getattr(_cycle(scope), "transport", None)
    if transport is None:
        raise ConnectionAbortedError("emulator scenario: connection dropped")
    transport.close()
    while (await receive())["type"] != "http.disconnect":
        pass


async def sleep_at_least(seconds: float) -> None:
    """Sleep ``seconds`` by the monotonic clock (event-loop timers may fire a little early)."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:  # noqa: ASYNC110 - a deadline, not a condition
        await asyncio.sleep(remaining)


async def wait_for_disconnect(receive: Receive) -> None:
    """Block until the client goes away (the request body must already be read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class Drop(Response):
    """A "response" that closes the connection without answering."""

    def __init__(self) -> None:
        pass

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await drop_connection(scope, receive)


class Silent(Response):
    """A "response" for a client that is already gone: sends nothing."""

    def __init__(self) -> None:
        pass

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        return None


class JSONBytes(Response):
    """A JSON response with pre-built raw headers (no header normalisation work)."""

    def __init__(self, body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.body = body
        self.status_code = status
        self.background = None
        self.raw_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if headers:
            self.raw_headers += [(k.encode(), v.encode()) for k, v in headers.items()]


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONBytes(orjson.dumps(obj), status, headers)


async def read_json(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or :class:`BadRequest` (reads ``receive`` directly)."""
    message = await request.receive()
    raw = message.get("body", b"")
    if message.get("more_body"):
        parts = [raw]
        while message.get("more_body"):
            message = await request.receive()
            parts.append(message.get("body", b""))
        raw = b"".join(parts)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"We could not parse the JSON body of your request: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    return body


CALLS_KEPT = 10_000
"""How many recorded calls ``/_emulator/calls`` keeps (the oldest go first)."""

CALL_KINDS = ("embeddings", "chat", "images", "speech", "transcriptions", "videos", "realtime")


def new_call_log() -> deque[dict[str, Any]]:
    return deque(maxlen=CALLS_KEPT)


def record_call(request: Request, kind: str, model: str, inputs: list[Any]) -> dict[str, Any]:
    """Log one provider call (``/_emulator/calls``); the caller sets ``status`` once it answers."""
    entry = {
        "kind": kind,
        "path": request.scope["path"],
        "model": model,
        "inputs": inputs,
        "time": time.time(),
        "status": None,
    }
    log = getattr(request.app.state, "calls", None)
    if log is not None:
        log.append(entry)
    return entry


def answered(entry: dict[str, Any], response: Response) -> Response:
    """Note ``response``'s status in a :func:`record_call` entry (None for drops and hangs)."""
    entry["status"] = getattr(response, "status_code", None)
    return response


def refused_input(inputs: list[str], scenario: Scenario) -> int | None:
    """Index of the first input equal to the scenario's ``fail_input``, if any."""
    if scenario.fail_input is None:
        return None
    try:
        return inputs.index(scenario.fail_input)
    except ValueError:
        return None


BODY_FIELD = "emulator_scenario"


def scenario_spec(request: Request, body: dict[str, Any]) -> str | None:
    """The scenario of a request: the body field ``emulator_scenario`` (which a gateway passes
    through to the provider like any unknown field) merged with the header (the header wins)."""
    field = body.get(BODY_FIELD)
    header = scenario_header(request)
    if isinstance(field, str) and field:
        return f"{field},{header}" if header else field
    return header


def scenario_header(request: Request) -> str | None:
    """The raw ``x-emulator-scenario`` header, if any (scans the ASGI headers directly)."""
    for name, value in request.scope["headers"]:
        if name == _HEADER_BYTES:
            return bytes(value).decode("latin-1")
    return None


def retry_headers(scenario: Scenario) -> dict[str, str] | None:
    ms = scenario.retry_after_ms
    if ms is None:
        return None
    return {"retry-after-ms": str(ms), "retry-after": str(-(-ms // 1000))}


#: :func:`preflight` result for a hanging request whose client went away.
GONE = -1


async def preflight(request: Request, scenario: Scenario) -> int | None:
    """Apply ``hang``, ``ttfb_ms`` and failures before any byte is sent.

    Returns ``None`` to proceed, an HTTP error status to answer with, or
    :data:`GONE` when a hanging request's client went away.
    """
    if scenario.hang or _counted(request, ("hang_first", scenario.key), scenario.hang_first):
        await wait_for_disconnect(request.receive)
        return GONE
    if scenario.ttfb_ms:
        await sleep_at_least(scenario.ttfb_ms / 1000)
    if scenario.fail_first:
        return scenario.fail_status() if _counted(request, scenario.key, scenario.fail_first) else None
    return scenario.status


def _counted(request: Request, key: object, first: int) -> bool:
    """Whether this call is one of the first ``first`` calls counted under ``key`` (it counts)."""
    if not first:
        return False
    counters: dict[object, int] = request.app.state.fail_counts
    seen = counters.get(key, 0)
    counters[key] = seen + 1
    return seen < first


async def generation_delay(scenario: Scenario, tokens: int) -> None:
    """Non-streaming answers take as long as streaming them would have."""
    if scenario.chunk_delay_ms and tokens:
        await sleep_at_least(scenario.chunk_delay_ms * tokens / 1000)


class Stream(Response):
    """Streams ``head + body + tail`` with the scenario's pacing and drop behaviour.

    Writes are ``head+body[0]``, ``body[1]``, ..., ``body[-1]``, ``tail``, with
    ``chunk_delay_ms`` between consecutive writes (so a stream of N content
    chunks takes at least N delays). With no delay everything goes out in one
    write. ``disconnect_after=N`` sends ``head`` and the first N body events and
    then drops the connection (``tail`` is never sent).
    """

    def __init__(
        self,
        head: list[bytes],
        body: list[bytes],
        tail: list[bytes],
        scenario: Scenario,
        media_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        # (``events``, not Response's ``body``: that one is the whole body's bytes)
        self.head, self.events, self.tail, self.scenario = head, body, tail, scenario
        self.status_code = 200
        self.background = None
        self.media_type = media_type
        self.raw_headers = [(b"content-type", media_type.encode()), (b"cache-control", b"no-cache")]
        self.raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        cut = self.scenario.disconnect_after
        parts = self.events if cut is None else self.events[:cut]
        preamble = b"".join(self.head)
        if preamble:
            parts = [preamble + parts[0], *parts[1:]] if parts else [preamble]
        final = None if cut is not None else b"".join(self.tail)
        delay = self.scenario.chunk_delay_ms / 1000
        if not delay:
            data = b"".join(parts)
            if final is None:
                await send({"type": "http.response.body", "body": data, "more_body": True})
                await drop_connection(scope, receive)
            else:
                await send({"type": "http.response.body", "body": data + final, "more_body": False})
            return
        for i, part in enumerate(parts):
            if i:
                await sleep_at_least(delay)
                if client_gone(scope):
                    return
            await send({"type": "http.response.body", "body": part, "more_body": True})
        if final is None:
            await drop_connection(scope, receive)
            return
        await sleep_at_least(delay)
        if not client_gone(scope):
            await send({"type": "http.response.body", "body": final, "more_body": False})
