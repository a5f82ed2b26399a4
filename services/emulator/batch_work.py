"""Running a batch's requests: lazily, in order, through the emulator's own endpoint handlers.

A batch answers each request with the very handler that serves it one at a time
(:func:`.openai_api.chat_completions`, :func:`.openai_api.embeddings`,
:func:`.anthropic_api.messages`), called in-process (:func:`call_handler`: no socket, no HTTP),
so batch answers, token counts, validation errors and the per-request scenario keys
(``tokens``, ``status``, ``fail_first``, ``tool``, ``echo``, ...) are exactly those of the
single-request endpoints. Timing keys do not apply inside a batch (the batch's rate does):
``ttfb_ms`` and ``chunk_delay_ms`` are forced to 0; a request that the handler would not answer
(``hang``, ``disconnect_after``) gets the API's 500 error. Each answered request is logged for
``GET /_emulator/calls`` like a single call, with the batch's own path (e.g.
``/v1/batches/batch_...``) as ``path``.

Requests run when an observer needs them (:meth:`BatchWork.catch_up`, on every read of the batch):
the first ``finished`` of :class:`.batch_clock.Timeline` are answered, once each, in order;
the event loop gets a turn every :data:`YIELD_EVERY` requests so a large batch read at once does
not stall other traffic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from .batch_clock import Phase, Timeline
from .scenario import HEADER

YIELD_EVERY = 64
#: The scenario every in-batch request is answered with on top of its own (the header wins).
IN_BATCH = b"ttfb_ms=0,chunk_delay_ms=0"

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One answered request: HTTP status, JSON body, the handler's request id."""

    status: int
    body: Any
    request_id: str | None

    @property
    def ok(self) -> bool:
        return self.status == 200


def _header(response: Response, *names: bytes) -> str | None:
    for key, value in response.raw_headers:
        if key.lower() in names:
            return value.decode("latin-1")
    return None


async def call_handler(
    request: Request, endpoint: Endpoint, path: str, body: dict[str, Any], unanswered: Callable[[], Response]
) -> Outcome:
    """Answer ``body`` with ``endpoint`` in-process, as if POSTed to ``path`` of ``request``'s app.

    ``unanswered`` builds the error used when the handler gives no JSON body (hang, drop, stream).
    """
    raw = orjson.dumps(body)
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": raw, "more_body": False}

    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (HEADER.encode(), IN_BATCH)],
        "client": None,
        "server": None,
        "app": request.app,
        "state": {},
    }
    response = await endpoint(Request(scope, receive))
    if not isinstance(getattr(response, "body", None), bytes):
        response = unanswered()
    return Outcome(
        response.status_code,
        orjson.loads(response.body),
        _header(response, b"x-request-id", b"request-id"),
    )


@dataclass
class BatchWork:
    """A batch's timeline and the outcomes of its finished requests (in request order)."""

    timeline: Timeline
    run: Callable[[int], Awaitable[Outcome]]
    outcomes: list[Outcome] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def catch_up(self, now: float) -> Phase:
        """The phase at ``now``, with every request finished by then answered."""
        phase = self.timeline.at(now)
        async with self.lock:
            while len(self.outcomes) < phase.finished:
                self.outcomes.append(await self.run(len(self.outcomes)))
                if len(self.outcomes) % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        return phase

    def cancel(self, now: float) -> None:
        """Stop at ``now``: requests not finished by then never run."""
        self.timeline = replace(self.timeline, cancel_at=now)
