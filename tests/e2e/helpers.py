"""Reading the stack's topics directly, to check what the services wrote."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord


class TopicTail:
    """Reads a topic (all partitions, or one) from its current end; ``until`` waits for a condition."""

    def __init__(self, bootstrap: str, topic: str, partition: int | None = None):
        self.bootstrap, self.topic, self.partition = bootstrap, topic, partition
        self.records: list[ConsumerRecord] = []
        self._c = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=9 * 1024 * 1024
        )
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def __aenter__(self) -> TopicTail:
        await self._c.start()
        parts = self._c.partitions_for_topic(self.topic)
        if not parts:
            await self._c._client.force_metadata_update()
            parts = self._c.partitions_for_topic(self.topic)
        tps = [TopicPartition(self.topic, p) for p in sorted(parts) if self.partition in (None, p)]
        self._c.assign(tps)
        await self._c.seek_to_end(*tps)
        for tp in tps:
            await self._c.position(tp)
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        while True:
            for recs in (await self._c.getmany(timeout_ms=200)).values():
                self.records.extend(recs)
                self._changed.set()

    async def until(
        self, cond: Callable[[list[ConsumerRecord]], bool], timeout: float = 30
    ) -> list[ConsumerRecord]:
        async with asyncio.timeout(timeout):
            while not cond(self.records):
                self._changed.clear()
                await self._changed.wait()
        return self.records

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
        await self._c.stop()
