"""Bodies the edge never holds whole: a ``multipart/form-data`` request read part by part as it
arrives (uploads), and a response whose body is sent as it is produced (file contents, audio).

``FormReader`` feeds each ASGI body message to python-multipart's push parser and hands out
what it found in order: a part's headers, then its data in the pieces the client sent. Memory
is one body message plus the events parsed from it, whatever the upload's size. Text fields are
read whole, up to a limit.

``StreamedResponse`` sends its head when the first piece of the body is ready, so an error
before it (the pipeline refused the request, the object is gone) is still a JSON error answer
with its status. A client that disconnects stops the body's source (a stream's cleanup cancels
its request). An error after the head cannot change the status any more: the response is
aborted (``BodyAborted``), so the client sees a truncated body, never a short one that looks
complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from services.contracts.errors import GatewayError, InternalError, PayloadTooLarge, ValidationError

from .asgi import ClientGone, Headers, Receive, Request, Send
from .errors import error_headers, openai_error

log = logging.getLogger(__name__)

MULTIPART = b"multipart/form-data"
END, EOF = "end of part", "end of body"


def content_type(req: Request) -> tuple[bytes, dict[bytes, bytes]]:
    """The request's media type (lower case) and its parameters."""
    raw = next((v for k, v in req.scope["headers"] if k == b"content-type"), b"")
    kind, params = parse_options_header(raw)
    return kind.lower(), params


@dataclass(frozen=True, slots=True)
class Part:
    """One part of a form: ``filename`` is set for a file upload (possibly empty), None for a field."""

    name: str
    filename: str | None
    content_type: str | None


class FormReader:
    """Reads one ``multipart/form-data`` body. ``body_limit``: the most bytes the whole body may
    have (``PayloadTooLarge`` past it, and at once when ``Content-Length`` says more)."""

    def __init__(self, req: Request, *, body_limit: int):
        kind, params = content_type(req)
        boundary = params.get(b"boundary")
        if kind != MULTIPART or not boundary:
            raise ValidationError(
                "the body must be multipart/form-data with a boundary", param="content-type"
            )
        if req.content_length is not None:
            try:
                declared = int(req.content_length)
            except ValueError:
                raise ValidationError("invalid Content-Length header") from None
            if declared > body_limit:
                raise PayloadTooLarge(
                    f"request body of {declared} bytes exceeds the limit of {body_limit} bytes"
                )
        self._req = req
        self._limit = body_limit
        self._size = 0
        #: what the parser found, in order: a part's headers (``Part``), its data (``bytes``), the
        #: end of a part (``END``), of the body (``EOF``)
        self._events: deque[Part | bytes | str] = deque()
        self._field = bytearray()
        self._value = bytearray()
        self._headers: dict[str, str] = {}
        self._received_all = False
        self._in_part = False
        try:
            self._parser = MultipartParser(
                boundary,
                {
                    "on_part_begin": self._on_part_begin,
                    "on_header_field": lambda d, s, e: self._field.extend(d[s:e]),
                    "on_header_value": lambda d, s, e: self._value.extend(d[s:e]),
                    "on_header_end": self._on_header_end,
                    "on_headers_finished": lambda: self._events.append(self._part(self._headers)),
                    "on_part_data": lambda d, s, e: self._events.append(bytes(d[s:e])),
                    "on_part_end": lambda: self._events.append(END),
                    "on_end": lambda: self._events.append(EOF),
                },
            )
        except MultipartParseError as exc:  # (a boundary python-multipart refuses)
            raise ValidationError(f"malformed multipart body: {exc}") from None

    def _on_part_begin(self) -> None:
        self._headers = {}

    def _on_header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = self._value.decode("utf-8", "replace")
        self._field.clear()
        self._value.clear()

    async def _next_event(self) -> Part | bytes | str:
        while not self._events:
            if self._received_all:
                raise ValidationError("malformed multipart body: it ended before its closing boundary")
            message = await self._req.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            self._size += len(chunk)
            if self._size > self._limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {self._limit} bytes")
            try:
                self._parser.write(chunk)
                if not message.get("more_body", False):
                    self._received_all = True
                    self._parser.finalize()
            except MultipartParseError as exc:
                raise ValidationError(f"malformed multipart body: {exc}") from None
        return self._events.popleft()

    async def next_part(self) -> Part | None:
        """The next part's headers (what is left of the current part's data is skipped), or None
        after the last part."""
        async for _ in self.chunks():
            pass
        while True:
            event = await self._next_event()
            if event is EOF:
                return None
            if isinstance(event, Part):
                self._in_part = True
                return event

    @staticmethod
    def _part(headers: dict[str, str]) -> Part:
        disposition, params = parse_options_header(headers.get("content-disposition", ""))
        name = params.get(b"name")
        if disposition.lower() != b"form-data" or name is None:
            raise ValidationError(
                "malformed multipart body: a part without Content-Disposition form-data; name"
            )
        filename = params.get(b"filename")
        return Part(
            name=name.decode("utf-8", "replace"),
            filename=filename.decode("utf-8", "replace") if filename is not None else None,
            content_type=headers.get("content-type") or None,
        )

    async def chunks(self) -> AsyncIterator[bytes]:
        """The current part's data, in the pieces it arrives in."""
        while self._in_part:
            event = await self._next_event()
            if isinstance(event, bytes):
                if event:
                    yield event
            elif event is END:
                self._in_part = False
            elif event is EOF:
                raise ValidationError("malformed multipart body: a part has no end")

    async def text(self, limit: int) -> str:
        """The current part's data as UTF-8 text; ``ValidationError`` past ``limit`` bytes."""
        out = bytearray()
        async for data in self.chunks():
            out += data
            if len(out) > limit:
                raise ValidationError(f"form field longer than {limit} bytes")
        try:
            return out.decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError("form field is not UTF-8 text") from None


# --- responses ----------------------------------------------------------------------------------


class BodyAborted(Exception):
    """The body's source failed after the response head was sent: the response is cut off."""


ErrorBody = Callable[[GatewayError], tuple[int, bytes]]


class StreamedResponse:
    """A response whose body ``body`` yields (see the module docstring). ``length``: the body's
    size when known (``Content-Length``; else the server sends it chunked). ``head``: headers
    known only once the first piece is there. ``headers`` are sent with an error answer too."""

    def __init__(
        self,
        body: AsyncIterator[bytes],
        *,
        content_type: bytes,
        headers: Headers | None = None,
        length: int | None = None,
        head: Callable[[], Headers] | None = None,
        error_body: ErrorBody = openai_error,
    ):
        self.headers: Headers = list(headers or ())
        self._own: Headers = [(b"content-type", content_type)]
        if length is not None:
            self._own.append((b"content-length", str(length).encode()))
        self._body = body
        self._head = head
        self._error_body = error_body

    async def __call__(self, send: Send, receive: Receive) -> None:
        relay = asyncio.create_task(self._relay(send))
        watch = asyncio.create_task(_disconnect(receive))
        try:
            await asyncio.wait((relay, watch), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            relay.cancel()  # (done already unless the client left or we are cancelled)
            with contextlib.suppress(asyncio.CancelledError):
                await relay
        if not relay.cancelled():
            relay.result()  # BodyAborted

    async def _relay(self, send: Send) -> None:
        body = self._body
        started = False
        try:
            async for piece in body:
                if not started:
                    started = True
                    extra = self._head() if self._head is not None else []
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": [*self._own, *self.headers, *extra],
                        }
                    )
                if piece:
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
            if not started:
                await send(
                    {"type": "http.response.start", "status": 200, "headers": [*self._own, *self.headers]}
                )
            await send({"type": "http.response.body", "body": b""})
        except Exception as exc:
            err = exc if isinstance(exc, GatewayError) else None
            if err is None:
                log.exception("response body source failed")
                err = InternalError(f"reading the response body failed: {type(exc).__name__}")
            if started:
                log.warning("response body cut off: %s: %s", err.code, err.message)
                raise BodyAborted(f"{err.code}: {err.message}") from exc
            status, payload = self._error_body(err)
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *self.headers,
                *error_headers(err),
            ]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
        finally:
            if isinstance(body, AsyncGenerator):
                await body.aclose()


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
