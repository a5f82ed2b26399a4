"""Kafka wiring shared by every service: a publisher and an at-least-once consumer.

Why not faststream's subscriber here: its concurrent Kafka subscriber either
acknowledges on receipt (``ACK_FIRST``, which loses requests on a crash) or runs
one message at a time per partition, so one slow provider stream would block every
request behind it. ``Consumer`` runs up to ``max_in_flight`` handlers at once and
commits, per partition, only the offsets below the oldest unfinished message:
nothing is committed before its outputs are acknowledged, and nothing waits for an
unrelated slow request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import pydantic
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata
from pydantic import BaseModel, TypeAdapter

from . import metrics, service, telemetry
from .codec import encode

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


class DeadLetter(Exception):
    """Raised by a handler for a record that decodes but must not be processed (e.g. a plan
    naming a provider this service does not know): the record goes to the DLQ with this
    message as its reason, and the consumer goes on."""


MAX_MESSAGE_BYTES = 8 * 1024 * 1024
#: The fetch wait of the realtime relay's readers (``llm.realtime.in`` / ``.out``). aiokafka
#: sends a partition's next fetch only once the one in flight is answered; with a long poll a
#: frame arriving on a partition the broker is not waiting on (or just after an answer) sits up
#: to that long: the audio frames' p99 followed it.
REALTIME_FETCH_WAIT_MS = 5
#: How long ``Consumer.aclose`` (a SIGTERM) lets in-flight handlers finish before it commits
#: and leaves (``llmgw stop`` waits 30 s before SIGKILL).
DRAIN_S = 25.0


@contextlib.asynccontextmanager
async def range_reader(bootstrap_servers: str, client_id: str) -> AsyncIterator[AIOKafkaConsumer]:
    """A started consumer outside any group, for reading known offset ranges (state rebuilt on
    assignment): no commits, and no long poll, since it reads to ends it already knows."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=MAX_MESSAGE_BYTES + 65536,
        fetch_max_bytes=4 * MAX_MESSAGE_BYTES,
        fetch_max_wait_ms=10,
    )
    await reader.start()
    try:
        yield reader
    finally:
        await reader.stop()


class Publisher:
    """An idempotent producer (acks=all). ``publish`` enqueues and returns the ack future.

    Records sent with the same key land on one partition in the order ``publish``
    was called, so chunk events of a request stay in ``seq`` order.
    """

    def __init__(self, bootstrap_servers: str, *, client_id: str = "llmgw"):
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=0,
            max_request_size=MAX_MESSAGE_BYTES + 65536,
            request_timeout_ms=30000,
        )

    async def start(self) -> None:
        await self._producer.start()

    async def aclose(self) -> None:
        await self._producer.stop()

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def publish(
        self,
        topic: str,
        event: BaseModel,
        *,
        key: str | None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[object]:
        return await self.send_raw(
            topic,
            encode(event),
            key=key.encode() if key else None,
            partition=partition,
            headers=headers if headers is not None else telemetry.inject(),
        )

    async def send_raw(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[object]:
        fut: asyncio.Future[object] = await self._producer.send(
            topic, value, key=key, partition=partition, headers=headers
        )
        return fut

    async def partitions_for(self, topic: str) -> set[int]:
        parts: set[int] = await self._producer.partitions_for(topic)
        return parts


class DeadLetterFailed(Exception):
    """A record could not be written to ``llm.dlq`` within ``DeadLetters.retry_s``: the consumer
    that read it stops (and with it the service: ``services.runtime.service.fail``) rather than
    leave the record's partition uncommitted behind it."""


class DeadLetters:
    """Sends a record that cannot be processed to ``llm.dlq``: the original bytes, unchanged,
    with the reason and the source position in headers. Nothing is lost, nothing blocks.

    A failed send is tried again after 0.1 s, 0.2 s, ... (doubling, at most 2 s apart, each
    attempt bounded by what is left) for up to ``retry_s`` (60 s: longer than a broker restart);
    then ``send`` raises ``DeadLetterFailed``."""

    def __init__(self, publisher: Publisher, topic: str, consumer_name: str, *, retry_s: float = 60.0):
        self._publisher = publisher
        self._topic = topic
        self._consumer = consumer_name
        self.retry_s = retry_s

    async def send(self, record: ConsumerRecord, reason: str) -> None:
        headers = [
            ("dlq.reason", reason[:4000].encode()),
            ("dlq.source.topic", record.topic.encode()),
            ("dlq.source.partition", str(record.partition).encode()),
            ("dlq.source.offset", str(record.offset).encode()),
            ("dlq.consumer", self._consumer.encode()),
        ]
        value = record.value or b""
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_s
        delay, attempt = 0.1, 1
        while True:
            try:
                async with asyncio.timeout(max(deadline - loop.time(), 0.001)):
                    fut = await self._publisher.send_raw(self._topic, value, key=record.key, headers=headers)
                    fut.add_done_callback(_retrieved)  # an attempt given up on may still fail later
                    await asyncio.shield(fut)  # the producer's own future is left to the producer
                break
            except Exception as exc:
                left = deadline - loop.time()
                if left <= 0:
                    raise DeadLetterFailed(
                        f"could not dead-letter {where} to {self._topic} in {attempt} attempts over "
                        f"{self.retry_s:g}s: {type(exc).__name__}: {exc}"
                    ) from exc
                log.warning(
                    "dead-lettering %s failed (attempt %d: %s: %s); trying again in %.1fs",
                    where,
                    attempt,
                    type(exc).__name__,
                    exc,
                    min(delay, left),
                )
                await asyncio.sleep(min(delay, left))
                delay, attempt = min(delay * 2, 2.0), attempt + 1
        log.warning("dead-lettered %s: %s", where, reason[:200])


def _retrieved(fut: asyncio.Future[object]) -> None:
    if not fut.cancelled():
        fut.exception()


def validation_reason(exc: pydantic.ValidationError) -> str:
    """A short, specific reason: which fields were wrong and how (or that it was not JSON)."""
    parts = []
    for err in exc.errors()[:10]:
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "json_invalid":
            parts.append(
                f"invalid JSON: {err['ctx'].get('error', err['msg']) if err.get('ctx') else err['msg']}"
            )
        else:
            parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    more = len(exc.errors()) - 10
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


@dataclass
class _PartitionProgress:
    """Offsets handed out in fetch order; the commit point is the oldest unfinished one."""

    pending: deque[int] = field(default_factory=deque)
    done: set[int] = field(default_factory=set)
    next_offset: int | None = None

    def started(self, offset: int) -> None:
        self.pending.append(offset)
        self.next_offset = offset + 1

    def finished(self, offset: int) -> None:
        self.done.add(offset)
        while self.pending and self.pending[0] in self.done:
            self.done.discard(self.pending.popleft())

    def commit_point(self) -> int | None:
        return self.pending[0] if self.pending else self.next_offset


Handler = Callable[[M, ConsumerRecord], Awaitable[None]]
InvalidHandler = Callable[[ConsumerRecord, pydantic.ValidationError], Awaitable[None]]
Assigned = Callable[[set[TopicPartition]], None]
Revoked = Callable[[set[TopicPartition]], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    """How one topic's records are read, when one consumer group reads topics with different
    event types. ``decode`` turns a record's bytes into the handler's event (raising
    ``pydantic.ValidationError`` for bad bytes: the record is dead-lettered). ``inline`` handlers are awaited in the fetch loop, one record at a time in partition order
    and without an in-flight slot: for cheap in-memory work (a ledger's settlement); the others
    run as tasks, up to the consumer's ``max_in_flight`` at once.

    Tracing (``telemetry.consuming``): each record is handled in the trace context its headers
    carry and, while spans are recorded, in a ``{topic} process`` span of its own; ``spans=False``
    (and every ``inline`` handler) leaves the span out (a sink's plugin makes one per batch
    written), ``context=False`` the context too (state kept up to date, not a hop of a request:
    no span, no header parsed)."""

    decode: Callable[[bytes], Any]
    handler: Handler[Any]
    name: str = "event"
    on_invalid: InvalidHandler | None = None
    inline: bool = False
    spans: bool = True
    context: bool = True

    @classmethod
    def of(
        cls,
        model: type[BaseModel] | TypeAdapter[Any],
        handler: Handler[Any],
        *,
        name: str | None = None,
        on_invalid: InvalidHandler | None = None,
        spans: bool = True,
    ) -> Subscription:
        decode = model.validate_json if isinstance(model, TypeAdapter) else model.model_validate_json
        return cls(decode, handler, name or str(getattr(model, "__name__", "event")), on_invalid, spans=spans)


class Consumer(Generic[M]):
    """Consume ``topics`` in group ``group_id``: decode each record as ``model``, run
    ``handler`` for it (up to ``max_in_flight`` at once), commit what finished. Or, for topics
    with different event types, ``subscriptions`` (topic -> ``Subscription``) in their place.

    * A record that does not decode goes to the DLQ with the reason, then ``on_invalid``
      (e.g. to tell the caller) runs; an ``on_invalid`` that fails is logged. A handler that
      raises also dead-letters its record. Neither stops the consumer.
    * A record that cannot be dead-lettered (``DeadLetterFailed``, after ``DeadLetters``' own
      retries), or a fetch that raises, stops the consumer loudly: it is logged, ``failure``
      holds the error, fetching stops and ``services.runtime.service.fail`` stops the service
      (which then exits non-zero). The record stays uncommitted, so the group's next owner of
      its partition reads it again; nothing is pinned silently.
    * At ``max_in_flight`` the consumer's partitions are paused (records already fetched wait
      in order) and resumed as handlers finish: the fetch loop never blocks, so a saturated
      service keeps polling and stays in its group past ``max.poll.interval.ms``
      (``max_poll_interval_ms``). Inline subscriptions are never paused for this.
    * Commits run every 0.2 s, when partitions are revoked and at ``aclose``; a failed commit is
      logged (the periodic one is retried; the offsets stay uncommitted until one succeeds).
    * ``on_assigned`` runs (synchronously) as partitions are assigned, before any of their
      records is handled; it may ``hold`` some (paused until ``release``, e.g. while state is
      rebuilt) and ``seek`` them. ``on_revoked`` runs once revoked partitions' handlers had up
      to ``revoke_grace_s`` to finish and their finished offsets were committed.
    * ``assignor="range"`` co-partitions topics consumed together (same key, same count).
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        group_id: str,
        dead_letters: DeadLetters,
        topics: Iterable[str] = (),
        model: type[M] | TypeAdapter[Any] | None = None,
        handler: Handler[M] | None = None,
        model_name: str | None = None,
        on_invalid: InvalidHandler | None = None,
        subscriptions: Mapping[str, Subscription] | None = None,
        on_assigned: Assigned | None = None,
        on_revoked: Revoked | None = None,
        max_in_flight: int = 512,
        assignor: str = "roundrobin",
        auto_offset_reset: str = "earliest",
        revoke_grace_s: float = 5.0,
        drain_s: float = DRAIN_S,
        max_poll_interval_ms: int = 300000,
        client_id: str = "llmgw",
        fetch_max_wait_ms: int = 500,
    ):
        if subscriptions is None:
            assert model is not None and handler is not None, "give model and handler, or subscriptions"
            sub = Subscription.of(model, handler, name=model_name, on_invalid=on_invalid)
            subscriptions = {t: sub for t in topics}
        self._subs = dict(subscriptions)
        self.topics = list(self._subs)
        self.group_id = group_id
        self._dlq = dead_letters
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._backlog: deque[tuple[TopicPartition, ConsumerRecord]] = deque()
        self._saturated = False
        self._held: set[TopicPartition] = set()
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        self._progress: dict[TopicPartition, _PartitionProgress] = {}
        self._tasks: dict[TopicPartition, set[asyncio.Task[None]]] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._revoke_grace_s = revoke_grace_s
        self._drain_s = drain_s
        self._run_task: asyncio.Task[None] | None = None
        self._commit_task: asyncio.Task[None] | None = None
        self.assigned = asyncio.Event()
        #: Why the consumer stopped on its own (``DeadLetterFailed``, a failed fetch); else None.
        self.failure: BaseException | None = None
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset,
            partition_assignment_strategy=(
                (RangePartitionAssignor,) if assignor == "range" else (RoundRobinPartitionAssignor,)
            ),
            # a long poll: the broker answers as soon as a record arrives (latency-bound readers,
            # the realtime relay, ask for a short one: see ``REALTIME_FETCH_WAIT_MS``)
            fetch_max_wait_ms=fetch_max_wait_ms,
            max_partition_fetch_bytes=MAX_MESSAGE_BYTES + 65536,
            fetch_max_bytes=4 * MAX_MESSAGE_BYTES,
            session_timeout_ms=10000,
            heartbeat_interval_ms=3000,
            max_poll_interval_ms=max_poll_interval_ms,
        )

    async def start(self) -> None:
        self._consumer.subscribe(self.topics, listener=_Listener(self))
        await self._consumer.start()
        metrics.watch_consumer(self)
        self._run_task = asyncio.create_task(self._run(), name=f"consume:{','.join(self.topics)}")
        self._commit_task = asyncio.create_task(self._commit_loop(), name="commit")

    async def aclose(self) -> None:
        """Drain and leave: stop fetching, give in-flight handlers up to ``drain_s`` to finish,
        commit what finished, ``on_revoked`` for every partition, leave the group. Records never
        started, and handlers still running after ``drain_s``, stay uncommitted: the group reads
        them again. What was drained, committed and left behind is logged."""
        for t in (self._run_task, self._commit_task):
            if t:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        inflight = [t for ts in self._tasks.values() for t in ts]
        if inflight:
            log.info("draining %d in-flight handlers (up to %gs)", len(inflight), self._drain_s)
            _, still = await asyncio.wait(inflight, timeout=self._drain_s)
            if still:
                log.warning(
                    "%d handlers still running after %gs: their records stay uncommitted and are"
                    " read again by the group",
                    len(still),
                    self._drain_s,
                )
        try:
            await self._commit()
        except Exception:
            log.exception("offset commit at close failed: the group reads the uncommitted records again")
        if self._on_revoked is not None:  # leaving the group gives every partition up (aiokafka says nothing)
            try:
                await self._on_revoked(self.assignment())
            except Exception:
                log.exception("on_revoked failed while closing")
        await self._consumer.stop()
        log.info(
            "left group %s: %d handlers drained, %d records not started, committed %s",
            self.group_id,
            len(inflight),
            len(self._backlog),
            {f"{tp.topic}[{tp.partition}]": o for tp, o in sorted(self._committed.items())},
        )

    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment())

    def partition_stats(self) -> list[tuple[str, int, int | None, int]]:
        """Per assigned partition (for the metrics scrape): ``(topic, partition, lag, in flight)``,
        lag being the high watermark of the last fetch minus the commit point (records not yet
        handled and committed; None before the partition's first fetch), in flight its running
        handlers."""
        out: list[tuple[str, int, int | None, int]] = []
        for tp in self._consumer.assignment():
            hw = self._consumer.highwater(tp)
            progress = self._progress.get(tp)
            point = progress.commit_point() if progress is not None else self._committed.get(tp)
            lag = max(hw - point, 0) if hw is not None and point is not None else None
            out.append((tp.topic, tp.partition, lag, len(self._tasks.get(tp, ()))))
        return out

    def hold(self, tps: Iterable[TopicPartition]) -> None:
        """Pause ``tps`` until ``release``: none of their records is handled meanwhile."""
        self._held.update(tps)
        self._apply_pauses()

    def release(self, tps: Iterable[TopicPartition]) -> None:
        self._held.difference_update(tps)
        self._apply_pauses()

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """The next record of ``tp`` to fetch (an assigned partition)."""
        self._consumer.seek(tp, offset)

    async def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset of ``tp`` (``None``: the group never committed one)."""
        offset: int | None = await self._consumer.committed(tp)
        return offset

    def _apply_pauses(self) -> None:
        """Paused: held partitions, and while saturated every partition of a task subscription."""
        assigned = self._consumer.assignment()
        want = {
            tp for tp in assigned if tp in self._held or (self._saturated and not self._subs[tp.topic].inline)
        }
        paused = self._consumer.paused()
        if want - paused:
            self._consumer.pause(*(want - paused))
        if (paused - want) & assigned:
            self._consumer.resume(*((paused - want) & assigned))

    def _check_saturation(self) -> None:
        saturated = bool(self._backlog) or self._in_flight >= self._max_in_flight
        if saturated != self._saturated:
            self._saturated = saturated
            self._apply_pauses()

    async def _run(self) -> None:
        try:
            await self._fetch_loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # DeadLetterFailed of an inline record, or a fetch that raised
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        """Stop consuming for good and stop the service (``service.fail``): logged once."""
        if self.failure is not None:
            return
        self.failure = exc
        log.critical(
            "consumer of %s (group %s) stops: %s: %s",
            ", ".join(self.topics),
            self.group_id,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        if self._run_task is not None and self._run_task is not asyncio.current_task():
            self._run_task.cancel()
        service.fail(exc)

    async def _fetch_loop(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=500, max_records=500)
            for tp, records in batches.items():
                if tp in self._held:  # fetched just before the hold: read again once released
                    self._consumer.seek(tp, records[0].offset)
                    continue
                sub = self._subs[tp.topic]
                progress = self._progress.setdefault(tp, _PartitionProgress())
                for record in records:
                    if sub.inline:
                        progress.started(record.offset)
                        await self._dispatch(sub, record)  # DeadLetterFailed: the consumer stops
                        progress.finished(record.offset)
                    elif self._backlog or self._in_flight >= self._max_in_flight:
                        self._backlog.append((tp, record))
                    else:
                        self._start(tp, record)
            self._check_saturation()

    def _start(self, tp: TopicPartition, record: ConsumerRecord) -> None:
        progress = self._progress.setdefault(tp, _PartitionProgress())
        tasks = self._tasks.setdefault(tp, set())
        self._in_flight += 1
        progress.started(record.offset)
        task = asyncio.create_task(self._process(tp, record, progress))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _process(
        self, tp: TopicPartition, record: ConsumerRecord, progress: _PartitionProgress
    ) -> None:
        settled = False
        try:
            if self.failure is None:  # after a failure nothing more is handled (nor committed)
                await self._dispatch(self._subs[tp.topic], record)
                settled = True
        except Exception as exc:  # DeadLetterFailed
            self._fail(exc)
        finally:
            self._in_flight -= 1
            while self._backlog and self._in_flight < self._max_in_flight and self.failure is None:
                self._start(*self._backlog.popleft())
            self._check_saturation()
        if settled:
            progress.finished(record.offset)

    async def _dispatch(self, sub: Subscription, record: ConsumerRecord) -> None:
        """Handle the record or dead-letter it; ``DeadLetterFailed`` when even that fails
        (the record must then stay uncommitted)."""
        try:
            event = sub.decode(record.value or b"")
        except pydantic.ValidationError as exc:
            await self._dlq.send(record, f"{sub.name}: {validation_reason(exc)}")
            if sub.on_invalid is not None:
                try:
                    await sub.on_invalid(record, exc)
                except Exception:  # the record is in the DLQ: telling its caller is best effort
                    log.exception(
                        "on_invalid failed for %s[%d]@%d", record.topic, record.partition, record.offset
                    )
            return
        except Exception as exc:  # a decoder that raises something else: still a bad record
            await self._dlq.send(record, f"{sub.name}: undecodable: {type(exc).__name__}: {exc}")
            return
        try:
            if not sub.context:
                await sub.handler(event, record)
            else:
                with telemetry.consuming(
                    record.topic,
                    record.headers,
                    record.partition,
                    record.offset,
                    span=sub.spans and not sub.inline,
                ):
                    await sub.handler(event, record)
        except DeadLetter as exc:
            await self._dlq.send(record, str(exc))
        except Exception as exc:  # a bug or an unexpected failure: park the record, go on
            log.exception("handler failed for %s[%d]@%d", record.topic, record.partition, record.offset)
            await self._dlq.send(record, f"handler error: {type(exc).__name__}: {exc}")

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            try:
                await self._commit()
            except Exception:
                log.warning("offset commit failed; will retry", exc_info=True)

    async def _commit(self, only: Iterable[TopicPartition] | None = None) -> None:
        offsets = {}
        for tp, progress in self._progress.items():
            if only is not None and tp not in only:
                continue
            point = progress.commit_point()
            if point is not None and self._committed.get(tp) != point:
                offsets[tp] = OffsetAndMetadata(point, "")
        if offsets:
            await self._consumer.commit(offsets)
            for tp, om in offsets.items():
                self._committed[tp] = om.offset

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        self._backlog = deque((tp, r) for tp, r in self._backlog if tp not in revoked)  # never started
        inflight = [t for tp in revoked for t in self._tasks.get(tp, ())]
        if inflight:
            await asyncio.wait(inflight, timeout=self._revoke_grace_s)
        try:
            await self._commit(only=revoked)
        except Exception:
            log.exception(
                "offset commit of revoked %s failed: their new owner reads the uncommitted records again",
                sorted(f"{tp.topic}[{tp.partition}]" for tp in revoked),
            )
        for tp in revoked:
            self._progress.pop(tp, None)
            self._committed.pop(tp, None)
        self._held.difference_update(revoked)
        self._check_saturation()
        if self._on_revoked is not None:
            try:
                await self._on_revoked(revoked)
            except Exception:
                log.exception("on_revoked failed for %s", sorted(revoked))

    def _assigned(self, assigned: set[TopicPartition]) -> None:
        if self._on_assigned is not None:
            try:
                self._on_assigned(assigned)
            except Exception:
                log.exception("on_assigned failed for %s", sorted(assigned))
        self._apply_pauses()
        self.assigned.set()


class _Listener(ConsumerRebalanceListener):
    def __init__(self, consumer: Consumer[Any]):
        self._c = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._c._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._c._assigned(set(assigned))
