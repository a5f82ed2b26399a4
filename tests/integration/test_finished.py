"""Reading back what finished (``services/executor/finished.py``) on a real broker: only the
markers of plans at or after the committed offset count, and the read starts near the oldest
uncommitted plan's timestamp, not at the beginning of ``llm.finished``."""

from __future__ import annotations

import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import BaseModel

from services.contracts.events import ChatRequested, Deployment, ExecutionPlanned, new_id
from services.executor.finished import SKEW_S, marker, read_finished
from services.runtime.topics import Topics, apply_topics

ROOT = Path(__file__).resolve().parents[2]


def a_plan() -> ExecutionPlanned:
    req = ChatRequested(
        request_id=new_id(), tenant_id="t", model="m", messages=[{"role": "user", "content": "hi"}]
    )
    return ExecutionPlanned(
        request_id=req.request_id,
        tenant_id="t",
        request=req,
        deployments=[Deployment(alias="m", provider="p", upstream_model="u")],
    )


async def test_markers_of_plans_from_the_committed_offset_are_read_back(
    kafka_bootstrap: str, topic_prefix: str
):
    topics = Topics.load(ROOT / "topics.yaml", topic_prefix)
    await apply_topics(kafka_bootstrap, topics, only=["exec", "finished"])
    p, now_ms = 5, int(time.time() * 1000)
    old_ms = now_ms - int(3 * SKEW_S * 1000)
    plans = [a_plan() for _ in range(6)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:

        async def send(topic: str, event: BaseModel, ts: int, partition: int = p) -> int:
            ack = await producer.send(
                topic, event.model_dump_json().encode(), partition=partition, timestamp_ms=ts
            )
            return (await ack).offset  # type: ignore[no-any-return]

        # the first two plans are old (committed long ago); the others were planned now
        offsets = [
            await send(topics.exec.name, plan, old_ms if i < 2 else now_ms) for i, plan in enumerate(plans)
        ]
        # a marker older than the oldest uncommitted plan by more than the skew: never read (the
        # read starts at that plan's time; here it even names a plan that may be redelivered)
        await send(topics.finished.name, marker(plans[4], p, offsets[4], "ok"), old_ms)
        for i, plan in enumerate(plans):
            if i != 4:  # plan 4 was still running when its executor died: no marker of its own
                await send(
                    topics.finished.name, marker(plan, p, offsets[i], "ok"), old_ms if i < 2 else now_ms
                )
        other = a_plan()  # a marker naming another partition's plan is not this partition's
        await send(topics.finished.name, marker(other, p + 1, offsets[3], "ok"), now_ms)
    finally:
        await producer.stop()
    reader = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10
    )
    await reader.start()
    try:
        ids = await read_finished(reader, topics, {p: offsets[2], p + 1: None})
        assert ids[p] == {plans[2].request_id, plans[3].request_id, plans[5].request_id}
        assert ids[p + 1] == set()  # nothing was planned there
        # everything committed: nothing can be redelivered, nothing is read
        assert (await read_finished(reader, topics, {p: offsets[-1] + 1}))[p] == set()
    finally:
        await reader.stop()
