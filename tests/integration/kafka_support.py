"""Helpers the integration tests share on the real broker."""

from __future__ import annotations

import uuid

from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def new_topic(bootstrap: str, partitions: int, prefix: str = "t") -> str:
    """A fresh topic of ``partitions`` partitions (replication 1), named ``<prefix>-<random>``."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    return name
