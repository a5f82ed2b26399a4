"""Following a topic without a consumer group: one tail-reader for every process that reads
records as they arrive and commits nothing (the executor's ``llm.control`` and ``llm.breakers``,
the SDK's reply partition).

``Tail`` reads the named partitions of a topic (every partition: ``range(spec.partitions)`` of its
``topics.yaml`` declaration, which services check at start) from their end at ``start()`` (or from
the beginning), and hands each record to ``on_record``, in partition order, in the reading
task. Once ``start()`` returns, every record published afterwards is read. ``on_record`` is
synchronous and should be cheap (it runs inline, one record at a time): a handler that raises
is logged and the tail goes on with the next record; a fetch that fails is logged and tried
again a second later. Only ``aclose()`` stops it.

A record ``on_record`` cannot read (bytes that do not decode as its event) it reports by raising
``Malformed(reason)``. With ``dead_letters`` (``runtime.kafka.DeadLetters``) the tail sends that
record to ``llm.dlq`` with the reason and its source position in headers, from the reading task
once ``on_record`` has seen the rest of its batch, before it reads on (``reach`` waits for those
sends too); a dead letter that cannot be sent even after ``DeadLetters``' retries is logged as an
error and the tail goes on (a tail commits nothing, so nothing is pinned). Without
``dead_letters`` a ``Malformed`` record is logged and skipped. Every process tailing a topic
reads all of it, so each one dead-letters what it cannot read: the same source position may be
dead-lettered once per reading process, and again when one reads from the beginning after a
restart (``dlq.consumer`` says which reader sent it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from services.runtime.kafka import DeadLetterFailed, DeadLetters

log = logging.getLogger(__name__)

OnRecord = Callable[[ConsumerRecord], None]
#: Largest record a tail accepts (the gateway's largest message, with room for its batch).
MAX_FETCH_BYTES = 8 * 1024 * 1024 + 65536


class Malformed(Exception):
    """Raised by ``on_record`` for a record it cannot read; ``reason`` says what is wrong (it
    becomes the dead letter's ``dlq.reason``)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Tail:
    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        on_record: OnRecord,
        *,
        partitions: Iterable[int],
        start_at: Literal["end", "beginning"] = "end",
        client_id: str = "llmgw-tail",
        fetch_max_wait_ms: int = 500,
        dead_letters: DeadLetters | None = None,
    ):
        self.topic = topic
        self._bootstrap = bootstrap_servers
        self._on_record = on_record
        self.partitions = [TopicPartition(topic, p) for p in sorted(set(partitions))]
        self._start_at = start_at
        self._client_id = client_id
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._dead_letters = dead_letters
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._moved = asyncio.Event()
        self._handling = False  # a batch read is being handled (or its dead letters sent)

    async def start(self) -> None:
        """Connect, take the starting positions, then read in the background."""
        self._consumer = c = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            enable_auto_commit=False,
            fetch_max_wait_ms=self._fetch_max_wait_ms,
            max_partition_fetch_bytes=MAX_FETCH_BYTES,
        )
        await c.start()
        try:
            c.assign(self.partitions)
            if self._start_at == "end":
                await c.seek_to_end(*self.partitions)
            else:
                await c.seek_to_beginning(*self.partitions)
            for tp in self.partitions:
                await c.position(tp)  # resolved now: records published after start() are read
        except BaseException:
            await c.stop()
            raise
        self._task = asyncio.create_task(self._read(), name=f"tail:{self.topic}")

    async def _read(self) -> None:
        assert self._consumer is not None
        c, on_record = self._consumer, self._on_record
        while True:
            try:
                batches = await c.getmany(timeout_ms=1000)
            except Exception:
                log.exception("reading %s failed; trying again in 1 s", self.topic)
                await asyncio.sleep(1.0)
                continue
            if not batches:
                continue
            self._handling = True  # the positions are past this batch already: reach() waits
            try:
                unreadable: list[tuple[ConsumerRecord, str]] = []
                for records in batches.values():
                    for r in records:
                        try:
                            on_record(r)
                        except Malformed as bad:
                            unreadable.append((r, bad.reason))
                        except Exception:
                            log.exception(
                                "handling %s[%d]@%d failed; skipped", r.topic, r.partition, r.offset
                            )
                for r, reason in unreadable:  # the batch's handling stays one synchronous step
                    await self._dead_letter(r, reason)
            finally:
                self._handling = False
            self._moved.set()

    async def _dead_letter(self, r: ConsumerRecord, reason: str) -> None:
        if self._dead_letters is None:
            log.warning("skipping unreadable %s[%d]@%d: %s", r.topic, r.partition, r.offset, reason[:200])
            return
        try:
            await self._dead_letters.send(r, reason)
        except DeadLetterFailed as exc:
            log.error("%s; skipped", exc)

    async def position(self, partition: int) -> int:
        """The offset of the next record this tail will read from ``partition``."""
        assert self._consumer is not None, "start() first"
        return int(await self._consumer.position(TopicPartition(self.topic, partition)))

    async def end_offsets(self) -> dict[int, int]:
        """Each partition's end offset now (the offset the next record published will get)."""
        assert self._consumer is not None, "start() first"
        ends = await self._consumer.end_offsets(self.partitions)
        return {tp.partition: int(o) for tp, o in ends.items()}

    async def reach(self, offsets: dict[int, int]) -> None:
        """Return once every record below ``offsets`` (partition -> offset) has been handled (and
        the dead letters of its batch sent)."""
        while True:
            self._moved.clear()
            if not self._handling:
                behind = [p for p, o in offsets.items() if await self.position(p) < o]
                if not behind and not self._handling:
                    return
            await self._moved.wait()

    async def caught_up(self) -> None:
        """Return once every record published before this call has been handled."""
        await self.reach(await self.end_offsets())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
