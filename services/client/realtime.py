"""Realtime sessions over Kafka: the OpenAI Realtime protocol's events, carried as
``RealtimeFrame`` events to the executor holding the provider's WebSocket.

A client reads one partition of ``llm.realtime.out`` (``RealtimeHub``), named in each
session's ``open`` frame; a session's frames to the executor go to ``llm.realtime.in`` keyed by
the session id (so in order, to one executor). The executor says it still holds a session with
an ``alive`` frame every second; a session that hears nothing for ``silence_s`` ends with an
``error`` event (code ``session_lost``), as one whose executor died must, then ``session.usage``:
the usage of the turns the executor reported billed (each ``response.done`` frame carries the
session's usage so far). That session's summary, which its executor could not write, is then
written here (``RealtimeSessionSummarized``, ``ended_by: gateway``, on ``llm.realtime.sessions``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import orjson
from aiokafka.structs import ConsumerRecord

from services.contracts.errors import GatewayError
from services.contracts.events import (
    RealtimeFrame,
    RealtimeSessionSummarized,
    ReplyTo,
    SessionUsage,
    new_id,
    utcnow,
)
from services.runtime.config import MediaConfig
from services.runtime.kafka import REALTIME_FETCH_WAIT_MS, Publisher
from services.runtime.media.storage import FileStorage
from services.runtime.realtime_claims import check_in, redeem
from services.runtime.tail import Tail
from services.runtime.topics import Topics

log = logging.getLogger(__name__)
INLINE_MAX_BYTES: int = MediaConfig.model_fields["inline_max_bytes"].default

#: A session silent this long (no frame, not even ``alive``) is taken for lost.
SILENCE_S = 5.0
#: WebSocket close code of a session the gateway ended because of an error (RFC 6455 1011).
INTERNAL_ERROR = 1011
#: ... and of one it ended by policy: its budget or rate limit (RFC 6455 1008).
POLICY = 1008

#: Admits one turn of a session (``session id``, ``turn``): returns, or raises the
#: ``GatewayError`` (``budget_exceeded``, ``rate_limited``, ...) that refuses it.
Admit = Callable[[str, int], Awaitable[None]]


class SessionClosed(Exception):
    """The session ended: ``code`` and ``reason`` as the executor (or the silence) gave them."""

    def __init__(self, code: int, reason: str):
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


def _is_response_done(data: str) -> bool:
    """Whether a server event is ``response.done`` (its type is near the start: ``event_id`` and
    ``type`` lead every server event), read without decoding audio deltas."""
    return '"response.done"' in data[:200] and orjson.loads(data).get("type") == "response.done"


def error_event(code: str, message: str, kind: str = "server_error") -> str:
    """An ``error`` server event of the gateway's own."""
    return orjson.dumps(
        {
            "type": "error",
            "event_id": f"event_{new_id()[:20]}",
            "error": {"type": kind, "code": code, "message": message, "event_id": None},
        }
    ).decode()


def usage_event(usage: SessionUsage) -> str:
    """The ``session.usage`` server event: the session's usage summary, sent as it closes."""
    return orjson.dumps(
        {"type": "session.usage", "event_id": f"event_{new_id()[:20]}", "usage": usage.wire()}
    ).decode()


def lost_event(session_id: str, message: str) -> str:
    """The ``error`` server event of a session the gateway lost."""
    return error_event("session_lost", message)


class RealtimeSession:
    """One session: ``send`` client events, iterate server events (dicts; ``raw()`` for their
    JSON text). Iteration ends when the session closes (``close_code``, ``close_reason`` then
    say why)."""

    def __init__(
        self,
        hub: RealtimeHub,
        frame: RealtimeFrame,
        silence_s: float,
        admit: Admit | None = None,
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
        self._admit = admit
        self.turn = 0  # the turn admitted last (the next response.done is its usage)
        #: The session's usage as the executor last reported it (the turns billed so far).
        self.usage = SessionUsage()
        self._renewal: asyncio.Task[None] | None = None

    async def _publish(self, kind: Literal["open", "event", "close"], data: str | None = None) -> None:
        f = self._open
        seq = self._seq
        self._seq += 1
        ref = None
        if kind == "event" and data is not None:  # above the inline limit: by claim check
            hub = self._hub
            data, ref = await check_in(
                data,
                storage=hub.storage,
                limit=hub.inline_max_bytes,
                tenant_id=f.tenant_id,
                session_id=f.request_id,
                direction="in",
                seq=seq,
            )
        frame = (
            f
            if kind == "open"
            else RealtimeFrame(
                request_id=f.request_id,
                tenant_id=f.tenant_id,
                user_id=f.user_id,
                kind=kind,
                seq=seq,
                data=data,
                data_ref=ref,
            )
        )
        fut = await self._hub.publisher.publish(self._hub.topics.realtime_in.name, frame, key=f.request_id)
        if kind == "event":  # not waited for: the producer keeps a key's records in order
            fut.add_done_callback(self._sent)
        else:
            await fut

    def _sent(self, fut: asyncio.Future[object]) -> None:
        """A client event the broker refused: the session cannot go on with a gap in its events."""
        if not fut.cancelled() and fut.exception() is not None:
            self.reject_locally("server_error", f"a client event could not be relayed: {fut.exception()}")
            closing = self._local("close")
            closing.close_code, closing.reason = INTERNAL_ERROR, "a client event could not be relayed"
            self.queue.put_nowait(closing)

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
                reason = "the gateway lost the session (its executor stopped answering)"
                self._ended(INTERNAL_ERROR, reason)
                await self._summarize_lost(reason)
                yield lost_event(
                    self.session_id, "the gateway lost this session: its executor stopped answering"
                )
                yield usage_event(self.usage)
                return
            if frame.usage is not None:
                self.usage = frame.usage
            if frame.kind == "event" and frame.data_ref is not None:
                yield await self._redeemed(frame)
            elif frame.kind == "event" and frame.data is not None:
                yield frame.data
                if self._admit is not None and _is_response_done(frame.data):
                    self.turn += 1
                    self._renewal = asyncio.create_task(self._renew(self.turn))
            elif frame.kind == "close" and not self.caller_closed:
                self._ended(frame.close_code or 1000, frame.reason or "")
                return
            elif frame.kind == "close":
                self._ended(frame.close_code or 1000, frame.reason or "")
                return

    async def _redeemed(self, frame: RealtimeFrame) -> str:
        """A server event that came by claim check (never a ``response.done``: those are small)."""
        assert frame.data_ref is not None
        try:
            return await redeem(frame.data_ref, storage=self._hub.storage, tenant_id=self._open.tenant_id)
        except Exception as exc:  # the caller hears of the gap; the session goes on
            log.warning("realtime session %s: a server event could not be read: %s", self.session_id, exc)
            return orjson.dumps(
                {
                    "type": "error",
                    "event_id": f"event_{new_id()[:20]}",
                    "error": {"type": "server_error", "message": "a server event could not be read"},
                }
            ).decode()

    async def _summarize_lost(self, reason: str) -> None:
        """The summary of a session whose executor fell silent (it cannot write its own)."""
        f = self._open
        summary = RealtimeSessionSummarized(
            request_id=f.request_id,
            tenant_id=f.tenant_id,
            user_id=f.user_id,
            alias=f.model or "",
            api_key=f.api_key,
            client_id=f.client_id,
            dialect=f.dialect,
            usage=self.usage,
            started_at=f.occurred_at,
            ended_at=utcnow(),
            close_code=INTERNAL_ERROR,
            close_reason=reason,
            ended_by="gateway",
        )
        hub = self._hub
        try:
            await (await hub.publisher.publish(hub.topics.realtime_sessions.name, summary, key=f.request_id))
        except Exception:  # the caller still gets its error and close; the ledger lacks the summary
            log.exception("the summary of lost realtime session %s could not be written", f.request_id)

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        async for data in self.raw():
            yield orjson.loads(data)

    def _ended(self, code: int, reason: str) -> None:
        self._closed = True
        self.close_code, self.close_reason = code, reason

    async def _renew(self, turn: int) -> None:
        """The next turn's lease; refused (budget spent, rate limited): the gateway ends the session
        (the executor sends the ``error`` event, the usage summary and the close, 1008)."""
        assert self._admit is not None
        try:
            await self._admit(self.session_id, turn)
        except GatewayError as err:
            await self.end_by_policy(err.code, err.message)
        except Exception as exc:  # the admission could not be asked: the session cannot go on unpaid
            await self.end_by_policy("internal_error", f"the next turn could not be admitted: {exc}")

    async def end_by_policy(self, code: str, message: str) -> None:
        """Ask the executor to end the session with an ``error`` event (``code``) and close 1008."""
        f = self._open
        frame = RealtimeFrame(
            request_id=f.request_id,
            tenant_id=f.tenant_id,
            user_id=f.user_id,
            kind="close",
            seq=self._seq,
            data=error_event(code, message, "invalid_request_error"),
            close_code=POLICY,
            reason=message[:120],
        )
        self._seq += 1
        await (await self._hub.publisher.publish(self._hub.topics.realtime_in.name, frame, key=f.request_id))

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
        if self._renewal is not None:
            self._renewal.cancel()
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                await asyncio.shield(self._publish("close"))


class RealtimeHub:
    """The realtime side of one client: its ``llm.realtime.out`` partition, read from its end."""

    def __init__(
        self,
        bootstrap: str,
        publisher: Publisher,
        topics: Topics,
        partition: int,
        client_id: str,
        *,
        storage: FileStorage | None = None,
        inline_max_bytes: int = INLINE_MAX_BYTES,
    ):
        self.publisher = publisher
        self.topics = topics
        #: events above ``inline_max_bytes`` go by claim check through ``storage`` (when given)
        self.storage = storage
        self.inline_max_bytes = inline_max_bytes
        self.sessions: dict[str, RealtimeSession] = {}
        self.reply_to = ReplyTo(topic=topics.realtime_out.name, partition=partition)
        self._tail = Tail(
            bootstrap,
            topics.realtime_out.name,
            self._on_frame,
            partitions=[partition],
            client_id=client_id,
            fetch_max_wait_ms=REALTIME_FETCH_WAIT_MS,
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
        admit: Admit | None = None,
    ) -> AsyncIterator[RealtimeSession]:
        """``admit`` (the router's admission of each turn): the first turn is admitted before the
        session opens (a refusal raises its ``GatewayError``), each next one after the turn
        before it is done."""
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
        if admit is not None:
            await admit(frame.request_id, 0)
        session = RealtimeSession(self, frame, silence_s, admit)
        self.sessions[frame.request_id] = session
        try:
            await session._publish("open")
            yield session
        finally:
            await session.aclose()

    async def aclose(self) -> None:
        if self._started:
            await self._tail.aclose()
