"""Running ``audio.speech`` plans: a whole answer becomes ``SpeechOutput`` (the audio as a
``MediaRef`` with its bytes inline; the executor stages large ones for the media-store), a
streamed one (``plan.request.stream``) becomes chunk events carrying the audio in
``delta.audio`` (base64), to ``replies.chunk_target`` like chat's.

A streamed plan has one ``AudioChunkEmitter`` for all its attempts: ``seq`` is gap-free from 0
whichever deployment answers, and once a chunk has gone out no other attempt is made
(``Final``). The terminal chunk carries the usage and finish reason ``stop``; the result then
has no output (the caller already holds the audio).
"""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import UTC, datetime

from services.contracts.errors import GatewayError, ProviderTimeout
from services.contracts.events import (
    ChunkEmitted,
    Delta,
    ExecutionPlanned,
    SpeechOutput,
    SpeechRequested,
    Usage,
    new_id,
)
from services.runtime.kafka import Publisher
from services.runtime.replies import chunk_target
from services.runtime.topics import Topics

from .attempts import Final, Until
from .chunker import Send
from .handlers import Outcome, SecretLookup, after, chunk_template, earliest
from .media_calls import media_ref, whole_call
from .providers.media_base import SpeechAdapter
from .providers.registry import adapter_for
from .providers.transport import HttpTransport
from .targets import Target
from .watch import Watched

#: The most audio bytes one chunk event carries (its base64 stays well under a Kafka record's 1 MB).
MAX_CHUNK_BYTES = 192 * 1024


class AudioChunkEmitter:
    """Audio coalescing, as ``chunker.ChunkEmitter`` does for text: the first audio goes out at
    once; later audio is merged and sent at most once per window (a timer sends what waits when
    the window ends), and never more than ``max_bytes`` in one chunk. ``seq`` is assigned and the
    record handed to the producer under one lock, so chunks reach the partition in order."""

    def __init__(self, send: Send, template: ChunkEmitted, window_ms: int, max_bytes: int = MAX_CHUNK_BYTES):
        self._send = send
        self._template = template
        self._window = window_ms / 1000
        self._max = max_bytes
        self._lock = asyncio.Lock()
        self._buffer = bytearray()
        self._last_sent = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self.closed = False
        self.seq = 0
        self.acks: list[asyncio.Future[object]] = []

    def set_source(self, provider: str, model: str) -> None:
        self._template.provider, self._template.model = provider, model

    def set_fallback(self, fallback: str) -> None:
        self._template.fallback = fallback

    def first_token(self, ttft_ms: float) -> None:
        """The time to the first audio, named on the first chunk."""
        self._template.ttft_ms = ttft_ms

    @property
    def sent_any(self) -> bool:
        return self.seq > 0 or bool(self._buffer)

    async def add(self, audio: bytes) -> None:
        if self.closed or not audio:
            return
        self._buffer += audio
        if self.seq == 0 or time.time() - self._last_sent >= self._window:
            await self._flush()  # the first audio, or its window is over: all of it now
        elif len(self._buffer) >= self._max:
            await self._flush(full_only=True)  # whole chunks now, the rest when the window ends
            self._arm()
        else:
            self._arm()

    def _arm(self) -> None:
        if self._timer is None and self._buffer:
            wait = max(self._last_sent + self._window - time.time(), 0.0)
            self._timer = asyncio.get_running_loop().call_later(wait, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._flushing = asyncio.ensure_future(self._flush())

    async def _flush(
        self, *, final: bool = False, usage: Usage | None = None, full_only: bool = False
    ) -> None:
        async with self._lock:
            while not self.closed and (
                len(self._buffer) >= self._max if full_only else self._buffer or final
            ):
                now = time.time()
                piece = bytes(self._buffer[: self._max])
                del self._buffer[: self._max]
                last = final and not self._buffer
                update = {
                    "event_id": new_id(),
                    "occurred_at": datetime.fromtimestamp(now, UTC),
                    "seq": self.seq,
                    "delta": Delta(audio=base64.b64encode(piece).decode() if piece else None),
                    "final": last,
                    "finish_reason": "stop" if last else None,
                    "usage": usage if last else None,
                }
                chunk = self._template.model_copy(update=update)
                if self.seq > 0:
                    chunk.model = chunk.provider = chunk.ttft_ms = chunk.fallback = chunk.ratelimit = None
                self.seq += 1
                self._last_sent = now
                self.closed = last
                self.acks.append(await self._send(chunk))

    async def finish(self, usage: Usage) -> None:
        """Send what is buffered, then (or with it) the terminal chunk: usage, finish reason ``stop``."""
        self.cancel_timer()
        if self._flushing is not None:
            await self._flushing
        await self._flush(final=True, usage=usage)

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class SpeechRunner:
    def __init__(self, *, publisher: Publisher, topics: Topics, http: HttpTransport, secret: SecretLookup):
        self.publisher = publisher
        self.topics = topics
        self.http = http
        self.secret = secret

    def start(self, plan: ExecutionPlanned) -> SpeechCall:
        req = plan.request
        assert isinstance(req, SpeechRequested)
        if not req.stream:
            return SpeechCall(self, plan, None)
        topic, partition = chunk_target(req, self.topics)
        publisher, rid = self.publisher, req.request_id

        async def send(chunk: ChunkEmitted) -> asyncio.Future[object]:
            return await publisher.publish(topic, chunk, key=rid, partition=partition)

        template = chunk_template(plan)
        template.ratelimit = plan.ratelimit  # on the first chunk: the edge's response head
        return SpeechCall(self, plan, AudioChunkEmitter(send, template, plan.chunk_window_ms))


class SpeechCall:
    """The provider calls of one ``audio.speech`` plan (``attempts.Call``)."""

    def __init__(self, runner: SpeechRunner, plan: ExecutionPlanned, emitter: AudioChunkEmitter | None):
        self._runner, self._plan, self._emitter = runner, plan, emitter

    @property
    def acks(self) -> list[asyncio.Future[object]]:
        """The chunks' acks (awaited with the outcome's before the plan is committed)."""
        return self._emitter.acks if self._emitter is not None else []

    def prepare(self) -> None:
        pass

    def close(self) -> None:
        if self._emitter is not None:
            self._emitter.cancel_timer()

    async def __call__(self, target: Target, fallback_from: Target | None, until: Until) -> Outcome:
        adapter: SpeechAdapter = adapter_for(target.kind, "audio.speech")
        req = self._plan.request
        assert isinstance(req, SpeechRequested)
        key = self._runner.secret(target.api_key_env)
        emitter = self._emitter
        if emitter is None:
            done, ms = await whole_call(
                self._plan,
                target,
                self._runner.http,
                lambda http: adapter.speak(http, req, target, key),
                until,
            )
            output = SpeechOutput(
                media=media_ref(done.audio, done.mime_type, f"speech.{done.format}"), format=done.format
            )
            return Outcome(
                done.usage,
                target,
                done.model or target.upstream_model,
                provider_ms=ms,
                ttft_ms=ms,
                output=output,
            )
        if fallback_from is not None:
            emitter.set_fallback(f"{fallback_from.label} -> {target.label}")
        try:
            return await self._stream(adapter, req, target, key, emitter, until)
        except GatewayError as err:
            if emitter.sent_any:
                raise Final(err) from err
            raise

    async def _stream(
        self,
        adapter: SpeechAdapter,
        req: SpeechRequested,
        target: Target,
        key: str | None,
        emitter: AudioChunkEmitter,
        until: Until,
    ) -> Outcome:
        """The first audio must arrive within ``plan.ttft_ms`` and the stream end by ``until``."""
        plan = self._plan
        t0 = time.perf_counter()
        ttft: float | None = None
        usage: Usage | None = None
        emitter.set_source(target.provider, target.upstream_model)
        watch = Watched(self._runner.http)
        stream = adapter.stream(watch, req, target, key)
        first_by = after(plan.ttft_ms)
        clock = asyncio.timeout_at(earliest(first_by, until.at))
        try:
            async with clock:
                async for piece in stream:
                    if ttft is None and piece.audio:
                        ttft = (time.perf_counter() - t0) * 1000
                        emitter.first_token(ttft)
                        clock.reschedule(until.at)
                    usage = piece.usage or usage
                    await emitter.add(piece.audio)
        except TimeoutError:
            if not clock.expired():
                raise
            if ttft is None and first_by is not None and (until.at is None or first_by <= until.at):
                raise ProviderTimeout(
                    f"{target.provider}: no audio within ttft_ms={plan.ttft_ms}",
                    details={"upstream_status": None},
                ) from None
            raise until.timed_out(target, plan.total_ms) from None
        except GatewayError as err:
            watch.annotate(err)
            raise
        finally:
            emitter.cancel_timer()
            await stream.aclose()
        usage = usage or Usage(units={"characters": float(len(req.input))})
        await emitter.finish(usage)
        return Outcome(
            usage,
            target,
            target.upstream_model,
            provider_ms=(time.perf_counter() - t0) * 1000,
            ttft_ms=ttft,
            finish_reason="stop",
            chunks=emitter.seq,
        )
