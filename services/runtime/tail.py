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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

log = logging.getLogger(__name__)

OnRecord = Callable[[ConsumerRecord], None]
#: Largest record a tail accepts (the gateway's largest message, with room for its batch).
MAX_FETCH_BYTES = 8 * 1024 * 1024 + 65536


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
    ):
        self.topic = topic
        self._bootstrap = bootstrap_servers
        self._on_record = on_record
        self.partitions = [TopicPartition(topic, p) for p in sorted(set(partitions))]
        self._start_at = start_at
        self._client_id = client_id
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._moved = asyncio.Event()

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
            for records in batches.values():
                for r in records:
                    try:
                        on_record(r)
                    except Exception:
                        log.exception("handling %s[%d]@%d failed; skipped", r.topic, r.partition, r.offset)
            if batches:
                self._moved.set()

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
        """Return once every record below ``offsets`` (partition -> offset) has been handled."""
        while True:
            self._moved.clear()
            behind = [p for p, o in offsets.items() if await self.position(p) < o]
            if not behind:
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
