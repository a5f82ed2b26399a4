"""The emulated OpenAI Realtime API: ``GET /v1/realtime?model=...`` upgraded to a WebSocket.

Handshake: a bearer ``Authorization`` header (as the official SDKs send it) or the browsers'
``openai-insecure-api-key.<key>`` subprotocol, else HTTP 401; ``model`` is required (400). The
beta dialect is spoken when the client sends ``OpenAI-Beta: realtime=v1`` (or the
``openai-beta.realtime-v1`` subprotocol), the GA dialect otherwise (:mod:`.realtime_wire`).

The scenario comes from the model name and the ``x-emulator-scenario`` header as everywhere
(:mod:`.scenario`), plus two realtime aliases usable as scenario items: ``function_call``
(``tool=1``) and ``error`` (``status=500``), e.g. ``gpt-realtime-emu@function_call`` or
``gpt-realtime-emu@error,ttfb_ms=5``.

One session per connection: ``session.created`` first, then every client event is answered in
order (server VAD, items, responses: :mod:`.realtime_vad`, :mod:`.realtime_turn`). A malformed
client event gets an ``error`` event (``invalid_request_error``, with the offending event's
``event_id``) and the session goes on. One response runs at a time. Each finished response is
logged in ``/_emulator/calls`` as kind ``realtime`` with its ``usage`` and ``response_status``.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import orjson
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from . import media_synth, text
from .common import RAW_SEND, json_response
from .realtime_items import ClientError, Dialect, Item, Part, decode_audio, expect, parse_item, required
from .realtime_turn import Dropped, Turn, last_user_text
from .realtime_vad import BYTES_PER_MS, MIN_COMMIT_BYTES, InputBuffer
from .realtime_wire import Config, response_config, session_body, update_session, wire_type
from .scenario import HEADER, KEYS, Scenario, ScenarioError, build, parse_pairs, resolve

PATH = "/v1/realtime"
ALIASES = {"function_call": "tool=1", "error": "status=500"}
SESSION_SECONDS = 1800
RATE_LIMITS = {"requests": 10_000, "tokens": 10_000_000}

#: Where the scenario starts: ``@key=``, or ``@`` and a bare alias or scenario flag (``@echo``).
_SPLIT = re.compile(r"@(?=(?:" + "|".join(sorted({*ALIASES, *KEYS})) + r")(?:,|$)|[A-Za-z_][A-Za-z0-9_]*=)")


def _expand(spec: str) -> str:
    return ",".join(ALIASES.get(item.strip(), item) for item in spec.split(","))


def resolve_model(model: str, header: str | None) -> tuple[str, Scenario]:
    """Like :func:`.scenario.resolve`, with the realtime aliases expanded (and a scenario that starts
    with a bare flag, ``gpt-realtime-emu@echo``, recognised)."""
    match = _SPLIT.search(model)
    if match is None:
        return resolve(model, _expand(header) if header else header)
    name, pairs = model[: match.start()], parse_pairs(_expand(model[match.end() :]))
    if header:
        pairs.update(parse_pairs(_expand(header)))
    return name, build(pairs, default_key=f"{model[match.end() :]}|{header or ''}")


def _api_key(websocket: WebSocket) -> str | None:
    scheme, _, key = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and key.strip():
        return key.strip()
    for protocol in websocket.scope.get("subprotocols", []):
        if protocol.startswith("openai-insecure-api-key.") and len(protocol) > 24:
            return str(protocol[24:])
    return None


def _dialect(websocket: WebSocket) -> Dialect:
    beta = websocket.headers.get("openai-beta", "")
    if "realtime=v1" in (value.strip() for value in beta.split(",")):
        return "beta"
    return "beta" if "openai-beta.realtime-v1" in websocket.scope.get("subprotocols", []) else "ga"


async def _deny(websocket: WebSocket, status: int, message: str, code: str | None = None) -> None:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code, "param": None}}
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(json_response(body, status))
    else:
        await websocket.close(1008, message[:120])


async def realtime(websocket: WebSocket) -> None:
    if _api_key(websocket) is None:
        return await _deny(websocket, 401, "Missing bearer authentication in header.", "missing_api_key")
    model = websocket.query_params.get("model")
    if not model:
        return await _deny(
            websocket, 400, "Missing required parameter: 'model'.", "missing_required_parameter"
        )
    try:
        name, scenario = resolve_model(model, websocket.headers.get(HEADER))
    except ScenarioError as exc:
        return await _deny(websocket, 400, str(exc))
    offered = websocket.scope.get("subprotocols", [])
    await websocket.accept(subprotocol="realtime" if "realtime" in offered else None)
    await RealtimeSession(websocket, _dialect(websocket), name, scenario).run()


class RealtimeSession:
    """The state of one connection: configuration, conversation, input buffer, active response."""

    def __init__(self, websocket: WebSocket, dialect: Dialect, model: str, scenario: Scenario) -> None:
        self.websocket, self.dialect, self.model, self.scenario = websocket, dialect, model, scenario
        self.id = text.new_id("sess_")
        self.conversation_id = text.new_id("conv_")
        self.config = Config()
        self.items: list[Item] = []
        self.buffer = InputBuffer()
        self.speech_item: str | None = None
        self.active: Turn | None = None
        self.task: asyncio.Task[None] | None = None
        self.expires_at = int(time.time()) + SESSION_SECONDS
        self.responses = 0
        self.tokens = 0
        self._send_lock = asyncio.Lock()

    # --- the connection -------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self.emit("session.created", session=self._session())
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                raw = message.get("text")
                if raw is None:
                    raw = (message.get("bytes") or b"").decode("utf-8", "replace")
                await self.handle(raw)
        except WebSocketDisconnect:
            return
        finally:
            if self.task is not None and not self.task.done():
                self.task.cancel()
                await asyncio.gather(self.task, return_exceptions=True)

    async def emit(self, event_type: str, **fields: Any) -> None:
        """Send one server event (named for the dialect; dropped if the dialect has no such event)."""
        name = wire_type(event_type, self.dialect)
        if name is None:
            return
        data = orjson.dumps({"event_id": text.new_id("event_"), "type": name, **fields}).decode()
        async with self._send_lock:
            await self.websocket.send_text(data)

    async def drop(self) -> None:
        """Close the TCP connection without a close frame (uvicorn), else close with 1011."""
        transport = getattr(getattr(self.websocket.scope.get(RAW_SEND), "__self__", None), "transport", None)
        if transport is not None:
            transport.close()
        else:
            await self.websocket.close(1011)

    async def handle(self, raw: str) -> None:
        """Answer one client event; a refused one gets an ``error`` event naming it."""
        event_id = None
        try:
            try:
                event = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise ClientError(
                    "We could not parse the JSON body of your event.", code="invalid_json"
                ) from None
            expect(event, dict, "event", "an object")
            event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
            kind = expect(required(event, "type"), str, "type", "a string")
            handler = self._handlers().get(kind)
            if handler is None:
                raise ClientError(
                    f"Invalid value: '{kind}'. Supported values are: "
                    + ", ".join(f"'{name}'" for name in self._handlers())
                    + ".",
                    param="type",
                    code="invalid_value",
                )
            await handler(event, event_id)
        except ClientError as exc:
            error = {"type": "invalid_request_error", "code": exc.code, "message": exc.message}
            await self.emit("error", error={**error, "param": exc.param, "event_id": event_id})

    def _handlers(self) -> dict[str, Any]:
        return {
            "session.update": self._session_update,
            "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit,
            "input_audio_buffer.clear": self._clear,
            "conversation.item.create": self._item_create,
            "conversation.item.delete": self._item_delete,
            "conversation.item.truncate": self._item_truncate,
            "conversation.item.retrieve": self._item_retrieve,
            "response.create": self._response_create,
            "response.cancel": self._response_cancel,
        }

    def _session(self) -> dict[str, Any]:
        return session_body(self.config, self.dialect, self.id, self.model, self.expires_at)

    # --- session and input audio ----------------------------------------------------------------

    async def _session_update(self, event: dict[str, Any], event_id: str | None) -> None:
        self.config = update_session(self.config, required(event, "session"), self.dialect)
        await self.emit("session.updated", session=self._session())

    async def _append(self, event: dict[str, Any], event_id: str | None) -> None:
        self.buffer.append(decode_audio(required(event, "audio"), "audio"))
        while (vad := self.buffer.detect(self.config.vad())) is not None:
            if vad.kind == "speech_started":
                self.speech_item = text.new_id("item_")
                await self.emit(
                    "input_audio_buffer.speech_started", audio_start_ms=vad.ms, item_id=self.speech_item
                )
                if self.active is not None and self.config.turn_flag("interrupt_response"):
                    self.active.cancel("turn_detected")
                continue
            item_id = self.speech_item or text.new_id("item_")
            await self.emit("input_audio_buffer.speech_stopped", audio_end_ms=vad.ms, item_id=item_id)
            await self._committed(self.buffer.take_speech(vad.position), item_id)
            if self.config.turn_flag("create_response"):
                await self._auto_respond()

    async def _commit(self, event: dict[str, Any], event_id: str | None) -> None:
        size = len(self.buffer.audio)
        if size < MIN_COMMIT_BYTES:
            raise ClientError(
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
                f"but buffer only has {size / BYTES_PER_MS:.2f}ms of audio.",
                code="input_audio_buffer_commit_empty",
            )
        item_id = self.speech_item if self.buffer.speaking and self.speech_item else text.new_id("item_")
        await self._committed(self.buffer.take_all(), item_id)

    async def _committed(self, audio: bytes, item_id: str) -> None:
        """A user audio item from committed ``audio`` (and its transcription when configured)."""
        self.speech_item = None
        previous = self.items[-1].id if self.items else None
        await self.emit("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id)
        part = Part("input_audio", audio_bytes=len(audio))
        item = Item(item_id, "message", role="user", content=[part])
        await self.add_item(item)
        if self.config.transcription is not None:
            part.transcript = media_synth.heard(
                media_synth.AudioInfo("pcm", len(audio) / (1000 * BYTES_PER_MS))
            )
            await self.emit(
                "conversation.item.input_audio_transcription.completed",
                item_id=item_id,
                content_index=0,
                transcript=part.transcript,
                usage={"type": "duration", "seconds": round(len(audio) / (1000 * BYTES_PER_MS), 3)},
            )

    async def _clear(self, event: dict[str, Any], event_id: str | None) -> None:
        self.buffer.clear()
        self.speech_item = None
        await self.emit("input_audio_buffer.cleared")

    # --- conversation items ---------------------------------------------------------------------

    async def add_item(self, item: Item, index: int | None = None) -> None:
        """Insert ``item`` (at the end by default) and announce it."""
        index = len(self.items) if index is None else index
        previous = self.items[index - 1].id if index > 0 else None
        self.items.insert(index, item)
        rendered = item.render(self.dialect)
        await self.emit("conversation.item.added", previous_item_id=previous, item=rendered)
        if item.status == "completed":
            await self.emit("conversation.item.done", previous_item_id=previous, item=rendered)

    def _find(self, item_id: Any, code: str) -> int:
        expect(item_id, str, "item_id", "a string")
        for index, item in enumerate(self.items):
            if item.id == item_id:
                return index
        raise ClientError(f"The item with id '{item_id}' does not exist.", param="item_id", code=code)

    async def _item_create(self, event: dict[str, Any], event_id: str | None) -> None:
        item = parse_item(required(event, "item"), text.new_id("item_"))
        if any(known.id == item.id for known in self.items):
            raise ClientError(
                f"An item with id '{item.id}' already exists.", param="item.id", code="duplicate_item_id"
            )
        previous = event.get("previous_item_id")
        if previous is None:
            index = None
        elif previous == "root":
            index = 0
        else:
            index = self._find(previous, "previous_item_not_found") + 1
        await self.add_item(item, index)

    async def _item_delete(self, event: dict[str, Any], event_id: str | None) -> None:
        index = self._find(required(event, "item_id"), "item_delete_invalid_item_id")
        item = self.items.pop(index)
        await self.emit("conversation.item.deleted", item_id=item.id)

    async def _item_retrieve(self, event: dict[str, Any], event_id: str | None) -> None:
        item = self.items[self._find(required(event, "item_id"), "item_retrieve_invalid_item_id")]
        await self.emit("conversation.item.retrieved", item=item.render(self.dialect))

    async def _item_truncate(self, event: dict[str, Any], event_id: str | None) -> None:
        item = self.items[self._find(required(event, "item_id"), "item_truncate_invalid_item_id")]
        content_index = expect(required(event, "content_index"), int, "content_index", "an integer")
        end_ms = expect(required(event, "audio_end_ms"), int, "audio_end_ms", "an integer")
        parts = item.content if item.role == "assistant" else []
        if not 0 <= content_index < len(parts) or parts[content_index].type != "output_audio":
            raise ClientError(
                "Only model output audio messages can be truncated.",
                param="content_index",
                code="invalid_value",
            )
        part = parts[content_index]
        length_ms = part.audio_bytes // BYTES_PER_MS
        if not 0 <= end_ms <= length_ms:
            raise ClientError(
                f"Audio content of {length_ms}ms is already shorter than {end_ms}ms.",
                param="audio_end_ms",
                code="invalid_value",
            )
        part.audio_bytes, part.transcript = end_ms * BYTES_PER_MS, ""
        await self.emit(
            "conversation.item.truncated", item_id=item.id, content_index=content_index, audio_end_ms=end_ms
        )

    # --- responses ------------------------------------------------------------------------------

    async def _response_create(self, event: dict[str, Any], event_id: str | None) -> None:
        if self.active is not None:
            raise ClientError(
                f"Conversation already has an active response in progress: {self.active.id}. Wait until the "
                "response is finished before creating a new one.",
                code="conversation_already_has_active_response",
            )
        raw = event.get("response")
        config, options = response_config(self.config, raw, self.dialect)
        context = self.items
        if isinstance(raw, dict) and raw.get("input") is not None:
            given = expect(raw["input"], list, "response.input", "an array")
            context = [parse_item(item, text.new_id("item_")) for item in given]
        self._start(config, list(context), options, event_id)

    async def _response_cancel(self, event: dict[str, Any], event_id: str | None) -> None:
        wanted = event.get("response_id")
        if self.active is None or (wanted is not None and wanted != self.active.id):
            raise ClientError(
                "Cancellation failed: no active response found.", code="response_cancel_not_active"
            )
        self.active.cancel("client_cancelled")

    async def _auto_respond(self) -> None:
        """The response server VAD creates after a turn: an interrupted response ends first; a
        response still running (``interrupt_response: false``) means none is created."""
        if self.active is not None:
            if not self.active.cancelled.is_set() or self.task is None:
                return
            await asyncio.gather(self.task, return_exceptions=True)
        self._start(self.config, list(self.items), {"conversation": "auto", "metadata": None}, None)

    def _start(
        self, config: Config, context: list[Item], options: dict[str, Any], event_id: str | None
    ) -> None:
        turn = Turn(
            self,
            config,
            context,
            in_conversation=options["conversation"] == "auto",
            metadata=options["metadata"],
            client_event_id=event_id,
        )
        self.active = turn
        self.task = asyncio.create_task(self._respond(turn))

    async def _respond(self, turn: Turn) -> None:
        try:
            await turn.run()
        except (Dropped, WebSocketDisconnect):
            return
        finally:
            self.active = None
        self.responses += 1
        usage = turn.usage or {}
        self.tokens += usage.get("total_tokens", 0)
        self._record(turn)
        await self.emit(
            "rate_limits.updated",
            rate_limits=[
                {
                    "name": "requests",
                    "limit": RATE_LIMITS["requests"],
                    "remaining": RATE_LIMITS["requests"] - self.responses,
                    "reset_seconds": 60.0,
                },
                {
                    "name": "tokens",
                    "limit": RATE_LIMITS["tokens"],
                    "remaining": RATE_LIMITS["tokens"] - self.tokens,
                    "reset_seconds": 60.0,
                },
            ],
        )

    def failure_status(self) -> int | None:
        """The scenario's failure for this response, if any (``fail_first`` counts per app)."""
        scenario = self.scenario
        if not scenario.fail_first:
            return scenario.status
        counters: dict[object, int] = self.websocket.app.state.fail_counts
        key = ("realtime", scenario.key)
        seen = counters.get(key, 0)
        counters[key] = seen + 1
        return scenario.fail_status() if seen < scenario.fail_first else None

    def _record(self, turn: Turn) -> None:
        log = getattr(self.websocket.app.state, "calls", None)
        if log is None:
            return
        log.append(
            {
                "kind": "realtime",
                "path": PATH,
                "model": self.model,
                "inputs": [last_user_text(turn.context)],
                "time": time.time(),
                "status": turn.failed_status or 200,
                "response_id": turn.id,
                "response_status": turn.status,
                "usage": turn.usage,
            }
        )


def routes() -> list[Any]:
    """The one WebSocket route (typed ``Any``: :class:`.common.EmulatorApp` is typed for HTTP ``Route``s
    but takes any Starlette route)."""
    return [WebSocketRoute(PATH, realtime)]
