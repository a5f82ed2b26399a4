"""Which items of a provider batch already have their usage record on ``llm.usage``: what a run
resumed mid-way through its items' records must not publish again (``batch_run.py``).

Read outside any consumer group, every partition of ``llm.usage`` from the first record at or
after a time (when the earlier run began its items' records, less clock skew) to the end offsets
known when the read starts; records are matched on the batch id before they are parsed.
"""

from __future__ import annotations

from datetime import datetime

import orjson
from aiokafka import TopicPartition

from services.contracts.events import BatchRunRequested
from services.runtime.kafka import range_reader
from services.runtime.topics import Topics


async def billed_items(
    bootstrap: str, client_id: str, topics: Topics, req: BatchRunRequested, since: datetime
) -> set[str]:
    """The request ids of ``req``'s batch's items billed on ``llm.usage`` from ``since`` on."""
    topic = topics.usage.name
    tps = [TopicPartition(topic, p) for p in range(topics.usage.partitions)]
    marker = orjson.dumps(req.batch_id)
    out: set[str] = set()
    async with range_reader(bootstrap, client_id) as reader:
        reader.assign(tps)
        ends = await reader.end_offsets(tps)
        at = await reader.offsets_for_times(dict.fromkeys(tps, int(since.timestamp() * 1000)))
        active = {}
        for tp in tps:
            first = at.get(tp)
            begin = first.offset if first is not None else ends[tp]
            if begin < ends[tp]:
                reader.seek(tp, begin)
                active[tp] = ends[tp]
        while active:
            got = await reader.getmany(*active, timeout_ms=1000, max_records=10_000)
            for tp, records in got.items():
                for rec in records:
                    if rec.offset < active.get(tp, -1) and rec.value and marker in rec.value:
                        doc = orjson.loads(rec.value)
                        if doc.get("batch_id") == req.batch_id and doc.get("tenant_id") == req.tenant_id:
                            out.add(str(doc.get("request_id")))
            for tp in list(active):
                if await reader.position(tp) >= active[tp]:
                    del active[tp]
    return out
