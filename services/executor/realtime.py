"""Realtime sessions: the executor holds the provider's WebSocket, so credentials never leave it.

``llm.realtime.in`` (group ``llmgw-executor-realtime``, keyed by session id: all of a session's
frames reach one executor, in order) carries the caller's frames: ``open`` connects to the
alias's first deployment (URL and key from this process's configuration, the dialect the
caller spoke), ``event`` relays a client event, ``close`` ends the session. Server events go
back on the partition of ``llm.realtime.out`` the ``open`` frame named (only that topic), with
an ``alive`` frame every second while the session lives.

Each ``response.done`` is one turn: a ``UsageRecorded`` (operation ``realtime``, request id
``<session>/<response id>``, tokens with text/audio details in ``units``) priced at the
deployment's catalog price, found by the model the provider reports or, for a dated name
(``gpt-realtime-2025-08-28``), its base name; and an audit record. The session's start and end
are audit records too. The turn's usage record is on ``llm.usage`` before its ``response.done``
is relayed, and that frame carries the session's usage so far (``RealtimeFrame.usage``), so a
caller that declares the session lost knows what was billed. When the session ends its summary
is a ``RealtimeSessionSummarized`` on ``llm.realtime.sessions`` (for the usage ledger; not
billable) and in the end's audit record; the caller also gets it as a ``session.usage`` server
event when the gateway closes the session.

A frame for a session this executor does not hold (it restarted, or the partition moved) is
answered with an ``error`` event and a close (1011): the session is not resumed elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiokafka.structs import ConsumerRecord, TopicPartition

from services.contracts.events import (
    AuditAction,
    AuditRecorded,
    Deployment,
    Price,
    RealtimeFrame,
    RealtimeSessionSummarized,
    SessionUsage,
    Usage,
    UsageRecorded,
    new_id,
    utcnow,
)
from services.runtime.config import GatewayConfig
from services.runtime.kafka import Consumer, DeadLetters, Publisher, Subscription
from services.runtime.pricing import cost_usd
from services.runtime.realtime_claims import check_in, redeem
from services.runtime.settings import Settings
from services.runtime.topics import Topics

from .media import MediaIO
from .realtime_lane import GROUP_FETCH_WAIT_MS, Lane
from .targets import Target, Targets

log = logging.getLogger(__name__)
GROUP = "llmgw-executor-realtime"
ALIVE_S = 1.0
#: An ``open`` older than this is not served: its caller gave up on it (``SILENCE_S``).
STALE_OPEN_S = 10.0
NORMAL = 1000
POLICY = 1008
INTERNAL_ERROR = 1011
_DATED = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def base_model(name: str) -> str:
    """``gpt-realtime-2025-08-28`` -> ``gpt-realtime``; other names unchanged."""
    return _DATED.sub("", name)


def turn_price(target: Target, prices: dict[str, Price], reported: str | None) -> Price:
    """The price of a turn: the alias's deployment of the model the provider reports, else of
    that model's base name (a dated snapshot priced as its family), else the deployment's own."""
    if reported:
        for name in (reported, base_model(reported)):
            if name in prices:
                return prices[name]
    return target.price


def turn_usage(usage: dict[str, Any]) -> Usage:
    """``response.done``'s usage as the gateway's ``Usage``: tokens, and text/audio details in
    ``units`` (``input_text_tokens``, ``input_audio_tokens``, ``output_text_tokens``,
    ``output_audio_tokens``, ``cached_audio_tokens``)."""
    ind = usage.get("input_token_details") or {}
    outd = usage.get("output_token_details") or {}
    cached_details = ind.get("cached_tokens_details") or {}
    prompt, completion = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
    units = {
        "input_text_tokens": ind.get("text_tokens") or 0,
        "input_audio_tokens": ind.get("audio_tokens") or 0,
        "output_text_tokens": outd.get("text_tokens") or 0,
        "output_audio_tokens": outd.get("audio_tokens") or 0,
        "cached_audio_tokens": cached_details.get("audio_tokens") or 0,
    }
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=int(usage.get("total_tokens") or prompt + completion),
        cached_tokens=int(ind.get("cached_tokens") or 0),
        units={k: float(v) for k, v in units.items()},
    )


def ws_url(base_url: str, model: str) -> str:
    """The provider's Realtime URL from its HTTP base URL (``.../v1`` -> ``ws://.../v1/realtime``)."""
    url = base_url.rstrip("/")
    url = "wss" + url[5:] if url.startswith("https") else "ws" + url[4:] if url.startswith("http") else url
    return f"{url}/realtime?model={model}"


def error_event(code: str, message: str, kind: str = "server_error") -> str:
    return orjson.dumps(
        {
            "type": "error",
            "event_id": f"event_{new_id()[:20]}",
            "error": {"type": kind, "code": code, "message": message, "event_id": None},
        }
    ).decode()


class Session:
    """One session held here: the provider's WebSocket and the task relaying what it says."""

    def __init__(
        self, holder: RealtimeSessions, open_: RealtimeFrame, target: Target, prices: dict[str, Price]
    ):
        self.holder = holder
        self.open = open_
        self.id = open_.request_id
        self.target = target
        self.prices = prices
        assert open_.reply_to is not None
        self.topic, self.partition = open_.reply_to.topic, open_.reply_to.partition
        #: the caller's frames; ``None``: the provider's side ended (``_relay``)
        self.inbox: asyncio.Queue[RealtimeFrame | None] = asyncio.Queue()
        self.seq = 0
        self.usage = SessionUsage()
        self.started = time.monotonic()
        self.last_activity = self.started
        self.last_emit = self.started  # when a frame last went to the caller (``alive`` after ALIVE_S)
        self.task: asyncio.Task[None] | None = None
        #: the partition of ``llm.realtime.in`` its frames arrive on (read on the fast lane)
        self.in_tp: TopicPartition | None = None
        self._send_lock = asyncio.Lock()

    async def emit(
        self,
        kind: str,
        data: str | None = None,
        code: int | None = None,
        reason: str | None = None,
        usage: SessionUsage | None = None,
    ) -> None:
        seq = self.seq
        self.seq += 1
        ref = None
        h = self.holder
        if kind == "event" and data is not None and len(data) > h.inline_max_bytes // 4:
            data, ref = await check_in(  # above the inline limit: by claim check
                data,
                storage=await h.media.storage(),
                limit=h.inline_max_bytes,
                tenant_id=self.open.tenant_id,
                session_id=self.id,
                direction="out",
                seq=seq,
            )
        frame = RealtimeFrame(
            request_id=self.id,
            tenant_id=self.open.tenant_id,
            user_id=self.open.user_id,
            kind=kind,  # type: ignore[arg-type]
            seq=seq,
            data=data,
            data_ref=ref,
            close_code=code,
            reason=reason,
            usage=usage,
        )
        self.last_emit = time.monotonic()
        await self.holder.publisher.publish(self.topic, frame, key=self.id, partition=self.partition)

    async def run(self) -> None:
        code, reason, summary_to_client = NORMAL, "session closed by the caller", False
        h = self.holder
        await h.audit(self, "started")
        try:
            headers = {"Authorization": f"Bearer {h.settings.secret(self.target.api_key_env) or ''}"}
            if self.open.dialect == "beta":
                headers["OpenAI-Beta"] = "realtime=v1"
            async with h.http().ws_connect(
                ws_url(self.target.base_url, self.target.upstream_model),
                headers=headers,
                heartbeat=None,
                compress=0,  # audio deltas: base64 of PCM, little to gain for a deflate per frame
                max_msg_size=16 * 1024 * 1024,
            ) as ws:
                code, reason, summary_to_client = await self._relay(ws)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            code, reason, summary_to_client = INTERNAL_ERROR, f"provider connection failed: {exc}", True
            await self.emit("event", error_event("provider_error", reason))
        except asyncio.CancelledError:
            code, reason, summary_to_client = 1001, "the executor is stopping", True
            with contextlib.suppress(Exception):
                await asyncio.shield(self.emit("event", error_event("session_lost", reason)))
        finally:
            h.sessions.pop(self.id, None)
            if self.in_tp is not None:
                h.lane.leave(self.in_tp, self.id)
            with contextlib.suppress(Exception):
                await asyncio.shield(self._end(code, reason, summary_to_client))

    async def _end(self, code: int, reason: str, to_client: bool) -> None:
        summary = self.usage.wire()
        h = self.holder
        ended = RealtimeSessionSummarized(
            request_id=self.id,
            tenant_id=self.open.tenant_id,
            user_id=self.open.user_id,
            alias=self.target.alias,
            provider=self.target.provider,
            model=self.target.upstream_model,
            api_key=self.open.api_key,
            client_id=self.open.client_id,
            dialect=self.open.dialect,
            usage=self.usage,
            started_at=self.open.occurred_at,
            close_code=code,
            close_reason=reason,
            ended_by="executor",
        )
        written = await h.publisher.publish(h.topics.realtime_sessions.name, ended, key=self.id)
        if to_client:
            await self.emit(
                "event",
                orjson.dumps(
                    {"type": "session.usage", "event_id": f"event_{new_id()[:20]}", "usage": summary}
                ).decode(),
            )
        await self.emit("close", code=code, reason=reason[:120])
        await written
        await h.audit(
            self,
            "completed" if code in (NORMAL, 1001) else "failed",
            reason=f"{reason}; usage {orjson.dumps(summary).decode()}",
        )

    async def _relay(self, ws: aiohttp.ClientWebSocketResponse) -> tuple[int, str, bool]:
        """Client events to the provider until the session ends. One ``inbox.get`` per frame, no
        task: the provider's reader says it finished with a ``None`` in the inbox. ``alive`` goes
        out whenever nothing did for ``ALIVE_S``, however busy the client side is."""
        h = self.holder
        reader = asyncio.create_task(self._from_provider(ws))
        reader.add_done_callback(lambda _: self.inbox.put_nowait(None))
        try:
            while True:
                now = time.monotonic()
                remaining_total = h.max_session_s - (now - self.started)
                remaining_idle = h.idle_s - (now - self.last_activity)
                if remaining_total <= 0:
                    await self.emit(
                        "event",
                        error_event(
                            "session_expired",
                            f"the session reached its maximum length of {h.max_session_s:g}s",
                        ),
                    )
                    return POLICY, "maximum session length reached", True
                if remaining_idle <= 0:
                    await self.emit(
                        "event", error_event("session_idle", f"no client event for {h.idle_s:g}s")
                    )
                    return POLICY, "idle timeout", True
                quiet = ALIVE_S - (now - self.last_emit)
                if quiet <= 0:
                    await self.emit("alive")
                    continue
                try:
                    async with asyncio.timeout(min(quiet, remaining_total, remaining_idle)):
                        frame = await self.inbox.get()
                except TimeoutError:
                    continue
                if frame is None:  # the provider's side ended
                    return reader.result()
                if frame.kind == "close" and frame.close_code is not None:  # the gateway ends it
                    if frame.data is not None:
                        await self.emit("event", frame.data)
                    return frame.close_code, frame.reason or "closed by the gateway", True
                if frame.kind == "close":
                    return NORMAL, "session closed by the caller", False
                if frame.kind == "event" and frame.data_ref is not None:
                    self.last_activity = time.monotonic()
                    try:
                        data = await redeem(
                            frame.data_ref, storage=await h.media.storage(), tenant_id=self.open.tenant_id
                        )
                    except Exception as exc:  # the caller hears of it; the session goes on
                        log.warning("realtime session %s: a client event could not be read: %s", self.id, exc)
                        await self.emit(
                            "event",
                            error_event("client_event_unreadable", "a client event could not be read"),
                        )
                        continue
                    await ws.send_str(data)
                elif frame.kind == "event" and frame.data is not None:
                    self.last_activity = time.monotonic()
                    await ws.send_str(frame.data)
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader

    async def _from_provider(self, ws: aiohttp.ClientWebSocketResponse) -> tuple[int, str, bool]:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data: str = msg.data
            if '"response.done"' in data and (event := orjson.loads(data)).get("type") == "response.done":
                audit = await self._turn(event)  # billed before the caller hears of the turn
                await self.emit("event", data, usage=self.usage)
                await audit()
            else:
                await self.emit("event", data)
        return (ws.close_code or NORMAL), "the provider closed the session", True

    async def _turn(self, event: dict[str, Any]) -> Callable[[], Awaitable[None]]:
        """Record the turn's usage (returns once it is on ``llm.usage``); returns its audit."""
        response = event.get("response") or {}
        usage = turn_usage(response.get("usage") or {})
        turn = self.usage.turns
        price = turn_price(self.target, self.prices, response.get("model"))
        cost = cost_usd(usage, _Priced(price))
        self.usage = self.usage.plus(usage, cost)
        rid = f"{self.id}/{turn}"  # the turn's admission id: this usage settles its reservation
        status = response.get("status")
        record = UsageRecorded(
            request_id=rid,
            tenant_id=self.open.tenant_id,
            user_id=self.open.user_id,
            status="cancelled" if status == "cancelled" else "ok" if status != "failed" else "error",
            operation="realtime",
            alias=self.target.alias,
            provider=self.target.provider,
            model=self.target.upstream_model,
            client_id=self.open.client_id,
            api_key=self.open.api_key,
            conversation_id=self.id,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            total_tokens=usage.total_tokens,
            cost_usd=cost,
            streamed=True,
            units=usage.units,
            attempts=1,
        )
        h = self.holder
        await (await h.publisher.publish(h.topics.usage.name, record, key=record.tenant_id))
        return lambda: h.audit(
            self, "completed", request_id=rid, reason=f"turn {turn} ({response.get('id')}) {status}"
        )


@dataclass(frozen=True)
class _Priced:
    price: Price


class RealtimeSessions:
    """Every session this executor holds, and the consumer of ``llm.realtime.in``."""

    def __init__(
        self,
        settings: Settings,
        topics: Topics,
        config: GatewayConfig,
        targets: Targets,
        publisher: Publisher,
        *,
        media: MediaIO,
        max_session_s: float,
        idle_s: float,
    ):
        self.settings = settings
        #: events above the inline limit travel by claim check through the media bucket
        self.media = media
        self.inline_max_bytes = config.media.inline_max_bytes
        self.topics = topics
        self.config = config
        self.targets = targets
        self.publisher = publisher
        self.max_session_s = max_session_s
        self.idle_s = idle_s
        self.sessions: dict[str, Session] = {}
        self._http: aiohttp.ClientSession | None = None
        cid = f"executor-{settings.instance_id}-realtime"
        self.consumer: Consumer[RealtimeFrame] = Consumer(
            bootstrap_servers=settings.bootstrap_servers,
            group_id=settings.topic_prefix + GROUP,
            dead_letters=DeadLetters(publisher, topics.dlq.name, "executor-realtime"),
            subscriptions={
                topics.realtime_in.name: Subscription(
                    RealtimeFrame.model_validate_json, self._from_group, "RealtimeFrame", inline=True
                )
            },
            on_revoked=self._revoked,
            client_id=cid,
            fetch_max_wait_ms=GROUP_FETCH_WAIT_MS,
        )
        #: the partitions live sessions arrive on, also read with a short poll (``realtime_lane``)
        self.lane = Lane(
            settings.bootstrap_servers, f"{cid}-lane", RealtimeFrame.model_validate_json, self.handle
        )

    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    async def start(self) -> None:
        await self.consumer.start()

    async def aclose(self) -> None:
        await self.consumer.aclose()
        await self.lane.aclose()
        for s in list(self.sessions.values()):
            if s.task is not None:
                s.task.cancel()
        tasks = [s.task for s in self.sessions.values() if s.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if self._http is not None:
            await self._http.close()

    async def _from_group(self, frame: RealtimeFrame, record: ConsumerRecord | None) -> None:
        if record is None:
            await self.handle(frame, None)
        else:  # once, whichever of the group's reader and the lane's brings it first
            await self.lane.deliver(frame, record)

    async def _revoked(self, tps: set[TopicPartition]) -> None:
        self.lane.revoked(tps)

    async def handle(self, frame: RealtimeFrame, record: ConsumerRecord | None) -> None:
        """Inline, in partition order: a session's frames reach its session in order."""
        session = self.sessions.get(frame.request_id)
        if session is not None:
            if frame.tenant_id == session.open.tenant_id:
                session.inbox.put_nowait(frame)
            return
        if frame.kind == "open":
            if (utcnow() - frame.occurred_at).total_seconds() > STALE_OPEN_S:
                return  # an open nobody waits for any more (read back after a restart)
            await self._open(frame)
            opened = self.sessions.get(frame.request_id)
            if opened is not None and record is not None and opened.in_tp is None:
                opened.in_tp = TopicPartition(record.topic, record.partition)
                self.lane.join(opened.in_tp, opened.id)
        elif frame.kind == "event":  # a session this executor does not hold (any more)
            log.warning("realtime frame for unknown session %s", frame.request_id)

    async def _open(self, frame: RealtimeFrame) -> None:
        if frame.reply_to is None or frame.reply_to.topic != self.topics.realtime_out.name:
            log.warning(
                "realtime open %s names no reply partition of realtime_out; ignored", frame.request_id
            )
            return
        probe = Session.__new__(Session)
        probe.holder, probe.open, probe.id, probe.seq = self, frame, frame.request_id, 0
        probe.topic, probe.partition = frame.reply_to.topic, frame.reply_to.partition
        tenant = self.config.tenants.get(frame.tenant_id)
        catalog = self.targets.registry.catalog()
        model = catalog.get(frame.model or "")
        why = None
        if tenant is None or model is None or not tenant.allows(frame.model or ""):
            why = ("model_not_found", f"model {frame.model!r} does not exist or you do not have access to it")
        elif "realtime" not in model.capabilities:
            why = ("capability_not_supported", f"model {frame.model!r} does not support realtime sessions")
        if why is not None:
            await probe.emit("event", error_event(why[0], why[1], "invalid_request_error"))
            await probe.emit("close", code=POLICY, reason=why[1][:120])
            return
        assert model is not None and frame.model is not None
        dep = model.deployments[0]
        target = self.targets.one(
            Deployment(alias=frame.model, provider=dep.provider, upstream_model=dep.model)
        )
        prices = {d.model: d.price for d in model.deployments}
        session = Session(self, frame, target, prices)
        self.sessions[session.id] = session
        session.task = asyncio.create_task(session.run(), name=f"realtime:{session.id}")

    async def audit(
        self, s: Session, action: AuditAction, *, request_id: str | None = None, reason: str | None = None
    ) -> None:
        event = AuditRecorded(
            request_id=request_id or s.id,
            tenant_id=s.open.tenant_id,
            user_id=s.open.user_id,
            action=action,
            operation="realtime",
            actor="executor",
            alias=s.target.alias,
            provider=s.target.provider,
            model=s.target.upstream_model,
            client_id=s.open.client_id,
            reason=reason,
        )
        await (await self.publisher.publish(self.topics.audit.name, event, key=event.tenant_id))
