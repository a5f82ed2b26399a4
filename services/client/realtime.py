"""Realtime sessions over Kafka: the OpenAI Realtime protocol's events, carried as
``RealtimeFrame`` events to the executor holding the provider's WebSocket.

A client reads one partition of ``llm.realtime.out`` (``RealtimeHub``), named in each
session's ``open`` frame; a session's frames to the executor go to ``llm.realtime.in`` keyed by
the session id (so in order, to one executor). The executor says it still holds a session with
an ``alive`` frame every second; a session that hears nothing for ``silence_s`` ends with an
``error`` event (code ``session_lost``), as one whose executor died must.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Literal

import orjson
from aiokafka.structs import ConsumerRecord

from services.contracts.events import RealtimeFrame, ReplyTo, new_id
from services.runtime.kafka import Publisher
from services.runtime.tail import Tail
from services.runtime.topics import Topics

#: A session silent this long (no frame, not even ``alive``) is taken for lost.
SILENCE_S = 5.0
#: WebSocket close code of a session the gateway ended because of an error (RFC 6455 1011).
INTERNAL_ERROR = 1011


class SessionClosed(Exception):
    """The session ended: ``code`` and ``reason`` as the executor (or the silence) gave them."""

    def __init__(self, code: int, reason: str):
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


def lost_event(session_id: str, message: str) -> str:
    """The ``error`` server event of a session the gateway lost."""
    return orjson.dumps(
        {
            "type": "error",
            "event_id": f"event_{new_id()[:20]}",
            "error": {"type": "server_error", "code": "session_lost", "message": message, "event_id": None},
        }
    ).decode()


class RealtimeSession:
    """One session: ``send`` client events, iterate server events (dicts; ``raw()`` for their
    JSON text). Iteration ends when the session closes (``close_code``, ``close_reason`` then
    say why)."""

    def __init__(
        self,
        hub: RealtimeHub,
        frame: RealtimeFrame,
        silence_s: float,
    ):
        self.session_id = frame.request_id
        self._hub = hub
        self._open = frame
        self._seq = 0
        self._silence_s = silence_s
        self.queue: asyncio.Queue[RealtimeFrame] = asyncio.Queue()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._closed = False
        #: The caller ended the session (``caller_close``): nothing is sent to it any more.
        self.caller_closed = False

    async def _publish(self, kind: Literal["open", "event", "close"], data: str | None = None) -> None:
        f = self._open
        frame = (
            f
            if kind == "open"
            else RealtimeFrame(
                request_id=f.request_id,
                tenant_id=f.tenant_id,
                user_id=f.user_id,
                kind=kind,
                seq=self._seq,
                data=data,
            )
        )
        self._seq += 1
        await (await self._hub.publisher.publish(self._hub.topics.realtime_in.name, frame, key=f.request_id))

    async def send(self, event: dict[str, Any] | str) -> None:
        """One client event (a dict, or its JSON text, relayed unchanged)."""
        if self._closed:
            raise SessionClosed(self.close_code or 1000, self.close_reason or "closed")
        data = event if isinstance(event, str) else orjson.dumps(event).decode()
        await self._publish("event", data)

    async def raw(self) -> AsyncIterator[str]:
        """Server events' JSON text, in order, until the session closes."""
        while not self._closed:
            try:
                async with asyncio.timeout(self._silence_s):
                    frame = await self.queue.get()
            except TimeoutError:
                self._ended(INTERNAL_ERROR, "the gateway lost the session (its executor stopped answering)")
                yield lost_event(
                    self.session_id, "the gateway lost this session: its executor stopped answering"
                )
                return
            if frame.kind == "event" and frame.data is not None:
                yield frame.data
            elif frame.kind == "close" and not self.caller_closed:
                self._ended(frame.close_code or 1000, frame.reason or "")
                return
            elif frame.kind == "close":
                self._ended(frame.close_code or 1000, frame.reason or "")
                return

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        async for data in self.raw():
            yield orjson.loads(data)

    def _ended(self, code: int, reason: str) -> None:
        self._closed = True
        self.close_code, self.close_reason = code, reason

    async def caller_close(self) -> None:
        """The caller went away: tell the executor, and end iteration."""
        self.caller_closed = True
        await self.aclose()
        self.queue.put_nowait(self._local("close"))

    def reject_locally(self, kind: str, message: str) -> None:
        """An ``error`` server event of the caller's own making (it never reached the session)."""
        data = orjson.dumps(
            {
                "type": "error",
                "event_id": f"event_{new_id()[:20]}",
                "error": {"type": kind, "message": message},
            }
        ).decode()
        self.queue.put_nowait(self._local("event", data))

    def _local(self, kind: Literal["event", "close"], data: str | None = None) -> RealtimeFrame:
        f = self._open
        return RealtimeFrame(request_id=f.request_id, tenant_id=f.tenant_id, kind=kind, data=data)

    async def aclose(self) -> None:
        """Tell the executor the session is over (it closes the provider's WebSocket)."""
        self._hub.sessions.pop(self.session_id, None)
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                await asyncio.shield(self._publish("close"))


class RealtimeHub:
    """The realtime side of one client: its ``llm.realtime.out`` partition, read from its end."""

    def __init__(self, bootstrap: str, publisher: Publisher, topics: Topics, partition: int, client_id: str):
        self.publisher = publisher
        self.topics = topics
        self.sessions: dict[str, RealtimeSession] = {}
        self.reply_to = ReplyTo(topic=topics.realtime_out.name, partition=partition)
        self._tail = Tail(
            bootstrap, topics.realtime_out.name, self._on_frame, partitions=[partition], client_id=client_id
        )
        self._started = False
        self._lock = asyncio.Lock()

    async def ensure_started(self) -> None:
        async with self._lock:
            if not self._started:
                await self._tail.start()
                self._started = True

    def _on_frame(self, r: ConsumerRecord) -> None:
        sid = r.key.decode(errors="replace") if r.key else ""
        session = self.sessions.get(sid)
        if session is None:
            return
        frame = RealtimeFrame.model_validate_json(r.value or b"")
        if frame.tenant_id == session._open.tenant_id:
            session.queue.put_nowait(frame)

    @contextlib.asynccontextmanager
    async def session(
        self,
        model: str,
        *,
        tenant_id: str,
        user_id: str | None,
        dialect: Literal["ga", "beta"] = "ga",
        api_key: str | None = None,
        client_id: str | None = None,
        silence_s: float = SILENCE_S,
    ) -> AsyncIterator[RealtimeSession]:
        await self.ensure_started()
        frame = RealtimeFrame(
            request_id=new_id(),
            tenant_id=tenant_id,
            user_id=user_id,
            kind="open",
            model=model,
            dialect=dialect,
            reply_to=self.reply_to,
            api_key=api_key,
            client_id=client_id,
        )
        session = RealtimeSession(self, frame, silence_s)
        self.sessions[frame.request_id] = session
        try:
            await session._publish("open")
            yield session
        finally:
            await session.aclose()

    async def aclose(self) -> None:
        if self._started:
            await self._tail.aclose()
