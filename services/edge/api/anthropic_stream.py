"""A chat stream as Anthropic Messages SSE: one state machine, fed the pipeline's chunk events.

``MessageStream`` is pure: ``feed(chunk)``, ``ping()``, ``fail(err)`` and ``end()`` each return
the frames (``(event, data)``) to send, in order. What it guarantees, whatever the chunking:

* every frame is ``event: <type>`` + ``data: <json>`` (Anthropic's SDKs drop frames without an
  ``event:`` line);
* ``message_start`` is the first frame, sent exactly once, at the first chunk event (a stream
  that fails before any chunk, after the response head went out, is one ``error`` frame);
* content blocks are indexed 0, 1, 2, ... in the order they start; one block is open at a time;
  a ``content_block_delta`` only ever goes to the open block, after its ``content_block_start``
  and before its ``content_block_stop`` (no "content block not found");
* every piece of text is a ``text_delta``, the first one included (a text block starts empty);
* a tool call is a ``tool_use`` block (``id``, ``name``, ``input: {}``) whose arguments follow
  as ``input_json_delta`` pieces; it starts once its name is known (arguments that come first
  are held until then);
* the final chunk closes the open block and sends ``message_delta`` (``stop_reason`` and the
  cumulative usage: the upstream's ``input_tokens``, ``output_tokens`` and
  ``cache_read_input_tokens``), then ``message_stop``;
* ``ping`` frames only between ``message_start`` and the end;
* a failure (a final chunk with an error, a pipeline error, a stream that ends early) is one
  ``error`` frame, after which nothing more is sent.

Prompt usage in ``message_start``: the pipeline reports usage on a stream's final chunk only
(``ChunkEmitted.usage``), so holding ``message_start`` for the real count would hold the whole
answer. It goes out with the first chunk instead, with ``input_tokens`` the upstream's when that
chunk carries usage, else the edge's estimate (``anthropic_tokens``), and
``output_tokens: 0``; ``message_delta`` then carries the upstream's real, cumulative counts, which
SDK accumulators (``get_final_message()``) take over.

Tool calls that interleave (arguments for a tool call whose block is already closed) cannot be
sent in order: the stream ends with an ``error`` frame (``api_error``) rather than lose them. The
pipeline never sends them (the executor merges each window's deltas per tool call, in order).

``MessageEncoder`` is the ``SseEncoder`` that runs it for ``SseResponse``; ``with_pings`` adds
a ``PING`` to the chunk source whenever it has been quiet for a while after its first chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Final

import orjson

from services.contracts.errors import GatewayError, InternalError
from services.contracts.events import ChunkEmitted, ToolCallDelta

from ..asgi import Headers, ms_header
from .anthropic_answer import message_id, stop_reason, usage_json
from .anthropic_errors import error_object
from .chat import OVERHEAD, chunk_error

Frame = tuple[str, dict[str, Any]]


class _Ping:
    def __repr__(self) -> str:
        return "PING"


#: What ``with_pings`` yields when the source has been quiet.
PING: Final = _Ping()


class MessageStream:
    """The state machine (see the module docstring) of request ``request_id`` (the message id is
    ``msg_<request id>``). ``estimate``: prompt tokens for ``message_start`` when the chunk that
    starts the message carries no usage."""

    def __init__(self, request_id: str, model: str, estimate: int = 0):
        self.request_id = request_id
        self.message_id = message_id(request_id)
        self.model = model
        self.estimate = estimate
        self.started = False
        self.done = False  # message_stop or error sent: nothing more goes out
        self.failed = False
        self._index = -1  # index of the last block started
        self._open: str | int | None = None  # "text", a tool call's index, or None
        self._closed_tools: set[int] = set()
        self._pending: dict[int, ToolCallDelta] = {}  # tool calls seen before their name
        self._used_tools = False

    # --- the four inputs ----------------------------------------------------------------------

    def feed(self, chunk: ChunkEmitted) -> list[Frame]:
        if self.done:
            return []
        out: list[Frame] = []
        if not self.started:
            out.append(self._message_start(chunk))
        if chunk.error is not None:
            return out + self.fail(chunk_error(chunk))
        d = chunk.delta
        if d.content:
            out += self._text(d.content)
        for tc in d.tool_calls or ():
            out += self._tool(tc)
            if self.done:  # interleaved tool calls: failed
                return out
        if chunk.final:
            out += self._close()
            out += self._pending_tools()
            out += self._close()
            out.append(
                (
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {
                            "stop_reason": stop_reason(chunk.finish_reason, self._used_tools),
                            "stop_sequence": None,
                        },
                        "usage": usage_json(chunk.usage, self.estimate),
                    },
                )
            )
            out.append(("message_stop", {"type": "message_stop"}))
            self.done = True
        return out

    def ping(self) -> list[Frame]:
        return [("ping", {"type": "ping"})] if self.started and not self.done else []

    def fail(self, err: GatewayError) -> list[Frame]:
        if self.done:
            return []
        self.done = self.failed = True
        return [("error", error_object(err, self.request_id))]

    def end(self) -> list[Frame]:
        """The source ended: nothing if the message is complete, else an ``error`` frame."""
        return self.fail(InternalError("the stream ended before the message was complete"))

    # --- parts --------------------------------------------------------------------------------

    def _message_start(self, chunk: ChunkEmitted) -> Frame:
        self.started = True
        known = chunk.usage if chunk.usage is not None and chunk.usage.prompt_tokens > 0 else None
        usage = usage_json(known, self.estimate)
        usage["output_tokens"] = 0
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        return "message_start", {"type": "message_start", "message": message}

    def _start(self, block: dict[str, Any], key: str | int) -> Frame:
        self._index += 1
        self._open = key
        return "content_block_start", {
            "type": "content_block_start",
            "index": self._index,
            "content_block": block,
        }

    def _delta(self, delta: dict[str, Any]) -> Frame:
        return "content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta}

    def _close(self) -> list[Frame]:
        if self._open is None:
            return []
        if isinstance(self._open, int):
            self._closed_tools.add(self._open)
        self._open = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self._index})]

    def _text(self, text: str) -> list[Frame]:
        out: list[Frame] = []
        if self._open != "text":
            out += self._close()
            out.append(self._start({"type": "text", "text": ""}, "text"))
        out.append(self._delta({"type": "text_delta", "text": text}))
        return out

    def _tool(self, tc: ToolCallDelta) -> list[Frame]:
        i = tc.index
        if i == self._open:
            return (
                [self._delta({"type": "input_json_delta", "partial_json": tc.arguments})]
                if tc.arguments
                else []
            )
        if i in self._closed_tools:
            if not tc.arguments:
                return []  # (an id or name said again: nothing new)
            return self.fail(
                InternalError(
                    f"the upstream interleaved tool calls: more arguments for tool call {i} after it ended"
                )
            )
        held = self._pending.get(i)
        if held is None:
            held = self._pending[i] = tc.model_copy()
        else:
            held.id = held.id or tc.id
            held.name = held.name or tc.name
            held.arguments += tc.arguments
        if not held.name:
            return []  # its block starts when its name arrives
        return self._start_tool(self._pending.pop(i))

    def _start_tool(self, tc: ToolCallDelta) -> list[Frame]:
        out = self._close()
        self._used_tools = True
        block = {
            "type": "tool_use",
            "id": tc.id or f"toolu_{self.request_id}_{tc.index}",
            "name": tc.name or "",
            "input": {},
        }
        out.append(self._start(block, tc.index))
        if tc.arguments:
            out.append(self._delta({"type": "input_json_delta", "partial_json": tc.arguments}))
        return out

    def _pending_tools(self) -> list[Frame]:
        """Tool calls whose name never came: sent as they are at the end, rather than lost."""
        out: list[Frame] = []
        for i in sorted(self._pending):
            out += self._start_tool(self._pending.pop(i))
        return out


def sse(frames: list[Frame]) -> bytes:
    """``event: <type>\\ndata: <json>\\n\\n`` per frame."""
    return b"".join(b"event: " + e.encode() + b"\ndata: " + orjson.dumps(d) + b"\n\n" for e, d in frames)


class MessageEncoder:
    """``SseEncoder`` for ``SseResponse``: chunk events and ``PING``s through a ``MessageStream``."""

    def __init__(self, machine: MessageStream):
        self.machine = machine

    def encode(self, event: ChunkEmitted | _Ping) -> bytes:
        if isinstance(event, _Ping):
            return sse(self.machine.ping())
        return sse(self.machine.feed(event))

    def end(self) -> bytes:
        return sse(self.machine.end())

    def error(self, err: GatewayError) -> bytes:
        return sse(self.machine.fail(err))

    def first_headers(self, event: ChunkEmitted | _Ping, elapsed_ms: float) -> Headers:
        """Overhead up to the first chunk, less the provider's time to first token."""
        provider_ttft = (event.ttft_ms or 0.0) if isinstance(event, ChunkEmitted) else 0.0
        return [ms_header(OVERHEAD, max(elapsed_ms - provider_ttft, 0.0))]


async def with_pings(
    source: AsyncIterator[ChunkEmitted], every_s: float
) -> AsyncGenerator[ChunkEmitted | _Ping, None]:
    """``source``'s events, and a ``PING`` each time ``every_s`` pass without one after the first.

    The source is read by one task at a time and never cancelled by a ping; closing this
    generator closes the source (its cleanup cancels the request when it stopped early)."""
    it = aiter(source)
    pending: asyncio.Task[ChunkEmitted | None] | None = None
    first = True
    try:
        while True:
            pending = asyncio.create_task(_next(it))
            while True:
                done, _ = await asyncio.wait((pending,), timeout=None if first else every_s)
                if done:
                    break
                yield PING
            try:
                event = pending.result()
            finally:
                pending = None
            if event is None:
                return
            first = False
            yield event
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending
        if isinstance(it, AsyncGenerator):
            await it.aclose()


async def _next(it: AsyncIterator[ChunkEmitted]) -> ChunkEmitted | None:
    """The next event, None at the end (a task must not end in ``StopAsyncIteration``)."""
    try:
        return await anext(it)
    except StopAsyncIteration:
        return None
