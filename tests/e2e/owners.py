"""Which router instance owns a partition now: the router group's assignment, as the broker
describes it (for tests that kill the owner of a tenant's partition)."""

from __future__ import annotations

import asyncio
import os
import signal

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from services.cli.stack import Stack
from services.router.admission import tenant_partition
from services.runtime.settings import Settings
from services.runtime.topics import Topics


async def owner(bootstrap: str, group: str, topic: str, partition: int, within: float = 60.0) -> str:
    """The client id of the group member assigned ``topic`` / ``partition`` (waits for a stable group)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        async with asyncio.timeout(within):
            while True:
                for resp in await admin.describe_consumer_groups([group]):
                    for g in resp.groups:
                        if g[2] != "Stable":
                            continue
                        for member in g[5]:
                            client_id, assignment = member[1], member[4]
                            if not assignment:
                                continue
                            for t, parts in ConsumerProtocolMemberAssignment.decode(assignment).assignment:
                                if t == topic and partition in parts:
                                    return str(client_id)
                await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def kill_owner(stack: Stack, settings: Settings, tenant: str) -> str:
    """SIGKILL the router instance owning ``tenant``'s partition; returns its component name."""
    requests = Topics.load(settings.topics_path, settings.topic_prefix).requests
    p = tenant_partition(tenant, requests.partitions)
    client_id = await owner(
        settings.bootstrap_servers, f"{settings.topic_prefix}llmgw-router", requests.name, p
    )
    name = client_id.removeprefix("router-")  # the router's client id is router-<instance id>
    victim = next(c for c in stack.load() if c.name == name)
    os.kill(victim.pid, signal.SIGKILL)  # type: ignore[arg-type]
    return name
