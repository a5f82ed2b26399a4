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

    async def caught_up(self) -> bool:
        """Whether every record the topic held when asked has been read (and kept)."""
        tps = list(self._c.assignment())
        ends = await self._c.end_offsets(tps)
        for tp in tps:
            if await self._c.position(tp) < ends[tp]:  # the reading task keeps what it fetched at once
                return False
        return True

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
        await self._c.stop()


async def group_members(bootstrap: str, group: str) -> dict[str, dict[str, list[int]]]:
    """The members of consumer group ``group`` as the broker has them: client id -> topic ->
    assigned partitions (empty while the group rebalances)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        out: dict[str, dict[str, list[int]]] = {}
        for resp in await admin.describe_consumer_groups([group]):
            for g in resp.to_object()["groups"]:
                for m in g["members"]:
                    parts: dict[str, list[int]] = {}
                    if m["member_assignment"]:
                        a = ConsumerProtocolMemberAssignment.decode(m["member_assignment"])
                        parts = {t: sorted(ps) for t, ps in a.assignment}
                    out[m["client_id"]] = parts
        return out
    finally:
        await admin.close()
